"""transfer.fine_tune's learning-rate milestones (``head_milestones``, ``full_milestones``, ``gamma``).

Each phase follows PyTorch's ``MultiStepLR`` from the given rates: in a phase's epoch ``e``
(counting from 0) the head trains at ``lr · γ^#{m <= e}`` and the body at ``body_lr · γ^#{m <= e}``,
and phase 2 starts again from ``lr`` and ``body_lr``. Checked against that formula written out by
hand (bit for bit: γ = 0.5 makes every product exact) and against PyTorch when it is installed.
"""
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer
from nnscratch.data import DataLoader

LR, BODY_LR, GAMMA = 0.1, 0.02, 0.5


def mlp(seed=0):
    """A float64 network with a body (fc1) and a head (fc2), and no dropout (nothing random in training)."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Dense(12, 8, dtype=np.float64, generator=rng)), ("relu", nn.ReLU()),
        ("fc2", nn.Dense(8, 3, dtype=np.float64, generator=rng)),
    ]))


def loader():
    rng = np.random.default_rng(1)
    return DataLoader(rng.standard_normal((20, 1, 3, 4)), rng.integers(0, 3, 20), batch_size=6, shuffle=True, seed=4)


def by_hand(model, head_epochs, full_epochs, head_milestones, full_milestones):
    """The two phases epoch by epoch, each epoch's rates set from the formula."""
    optimizer = nn.SGD(transfer.param_groups(model, LR, BODY_LR, head="fc2"), lr=LR, momentum=0.9)
    data = loader()
    transfer.freeze(model)
    transfer.unfreeze(model, "fc2")
    for epochs, milestones, unfrozen in ((head_epochs, head_milestones, False), (full_epochs, full_milestones, True)):
        if unfrozen and epochs:  # fine_tune leaves the body frozen when there is no phase 2
            transfer.unfreeze(model)
        for epoch in range(epochs):
            factor = GAMMA ** sum(m <= epoch for m in milestones)
            optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = BODY_LR * factor, LR * factor
            nn.fit(model, nn.CrossEntropyLoss(), optimizer, data, 1, progress=False)
    return model


@pytest.mark.parametrize("head_epochs, full_epochs, head_milestones, full_milestones", [
    (2, 3, [], []),          # no milestones: constant rates, fine_tune as before
    (3, 4, [1, 2], [3]),     # phase 1 ends at lr / 4; phase 2 starts again at lr and body_lr
    (3, 4, [2, 2], [1]),     # a milestone given twice counts twice (as PyTorch's)
    (2, 0, [1], []),         # phase 1 only: the body stays frozen
    (0, 3, [], [1, 2]),      # phase 2 only
])
def test_milestones_follow_the_formula_in_each_phase(head_epochs, full_epochs, head_milestones, full_milestones):
    tuned = mlp()
    history = transfer.fine_tune(tuned, nn.CrossEntropyLoss(), loader(), head_epochs=head_epochs, full_epochs=full_epochs,
                                 lr=LR, body_lr=BODY_LR, head="fc2", head_milestones=head_milestones,
                                 full_milestones=full_milestones, gamma=GAMMA)
    assert history.epochs == head_epochs + full_epochs and history.epoch_batches == [4] * (head_epochs + full_epochs)
    expected = by_hand(mlp(), head_epochs, full_epochs, head_milestones, full_milestones)
    for (name, mine), (_, theirs) in zip(tuned.named_parameters(), expected.named_parameters()):
        assert mine.data.tobytes() == theirs.data.tobytes(), name
        assert mine.requires_grad == theirs.requires_grad == (full_epochs > 0 or name.startswith("fc2")), name


def test_milestones_change_the_training():
    """Not ignored: the same run without its milestones ends elsewhere."""
    with_drop, without = mlp(), mlp()
    for model, milestones in ((with_drop, [1]), (without, [])):
        transfer.fine_tune(model, nn.CrossEntropyLoss(), loader(), head_epochs=0, full_epochs=2, lr=LR, body_lr=BODY_LR,
                           head="fc2", full_milestones=milestones)
    assert not np.array_equal(with_drop.fc1.weight.data, without.fc1.weight.data)


def test_matches_torch_when_installed():
    """Both phases with milestones against torch: SGD with a body and a head group, the body frozen in
    phase 1, ``MultiStepLR`` stepped after every epoch, the rates set back for phase 2."""
    torch = pytest.importorskip("torch")
    ours = mlp()
    theirs = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            layer, kind = name.split(".")
            param.copy_(torch.from_numpy(dict(ours.named_parameters())[f"{'fc1' if layer == '1' else 'fc2'}.{kind}"].data))
    transfer.fine_tune(ours, nn.CrossEntropyLoss(), loader(), head_epochs=3, full_epochs=4, lr=LR, body_lr=BODY_LR,
                       head="fc2", head_milestones=[2], full_milestones=[1, 3], gamma=0.3)

    body, head = list(theirs[1].parameters()), list(theirs[3].parameters())
    optimizer = torch.optim.SGD([{"params": body, "lr": BODY_LR}, {"params": head, "lr": LR}], lr=LR, momentum=0.9)
    data = loader()
    for epochs, milestones, body_trains in ((3, [2], False), (4, [1, 3], True)):
        for param in body:
            param.requires_grad_(body_trains)
        optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = BODY_LR, LR
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.3)
        for _ in range(epochs):
            for x, y in data:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
                optimizer.step()
            scheduler.step()
    for name, param in theirs.named_parameters():
        layer, kind = name.split(".")
        mine = dict(ours.named_parameters())[f"{'fc1' if layer == '1' else 'fc2'}.{kind}"].data
        np.testing.assert_allclose(mine, param.detach().numpy(), rtol=1e-12, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(head_milestones=[0]), r"fine_tune: head_milestones\[0\] .*head_epochs=2.* must be an integer in \[1, 1\], got 0"),
    (dict(full_milestones=[1, 3]), r"fine_tune: full_milestones\[1\] .*full_epochs=3.* must be an integer in \[1, 2\], got 3"),
    (dict(full_milestones=[1.0]), r"full_milestones\[0\] .* must be an integer in \[1, 2\], got 1\.0"),
    (dict(full_milestones=2), r"fine_tune: full_milestones must be a list of epochs, got 2"),
    (dict(gamma=0.0), r"fine_tune: gamma .* must be a number in \(0, 1\], got 0\.0"),
    (dict(gamma=1.5), r"fine_tune: gamma .* got 1\.5"),
    (dict(gamma=True), r"fine_tune: gamma .* got True"),
])
def test_wrong_milestones_or_gamma_are_refused_before_anything_changes(kwargs, message):
    model, data = mlp(), loader()
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        transfer.fine_tune(model, nn.CrossEntropyLoss(), data, head_epochs=2, full_epochs=3, lr=LR, body_lr=BODY_LR,
                           head="fc2", **kwargs)
    assert data.epoch == 0 and transfer.frozen_parameters(model) == []
    for name, param in model.named_parameters():
        assert param.data.tobytes() == before[name].tobytes(), name

"""nnscratch.optim.lr_scheduler: PyTorch's documented schedules (values computed by hand), their
state_dict, fit's use of them, and checkpoints holding a scheduler (resumed bit-identically,
hostile states refused without changing anything)."""
import copy
import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import safetensors.numpy

import nnscratch as nn
from nnscratch.data import DataLoader
from nnscratch.optim import lr_scheduler
from nnscratch.training import load_checkpoint, save_checkpoint


def make_net(seed=1):
    nn.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(4, 3), drop=nn.Dropout(0.5), fc2=nn.Linear(3, 2)))


def two_groups(lr=0.05, body_lr=0.01):
    net = make_net()
    return nn.SGD([{"params": net.fc1.parameters(), "lr": body_lr}, {"params": net.fc2.parameters()}], lr=lr)


def lrs_over(scheduler, epochs):
    """[get_last_lr() at epoch 0, 1, ..., epochs - 1] (one step() after each epoch)."""
    seen = []
    for _ in range(epochs):
        seen.append(scheduler.get_last_lr())
        scheduler.step()
    return seen


StepLR, MultiStepLR, LambdaLR = lr_scheduler.StepLR, lr_scheduler.MultiStepLR, lr_scheduler.LambdaLR


def test_reachable_as_pytorch_names():
    assert nn.optim.lr_scheduler is lr_scheduler and nn.optim.lr_scheduler.StepLR is StepLR


# ---------------------------------------------------------------------------
# the documented schedules
# ---------------------------------------------------------------------------


def test_step_lr_is_pytorchs_documented_example():
    """torch docs: lr 0.05, step_size=30, gamma=0.1: 0.05 for epochs < 30, 0.005 for < 60, 0.0005 for < 90."""
    optimizer = nn.SGD(make_net().parameters(), lr=0.05)
    seen = [lr for (lr,) in lrs_over(StepLR(optimizer, step_size=30, gamma=0.1), 90)]
    assert seen[:30] == [0.05] * 30
    assert seen[30:60] == [0.05 * 0.1] * 30             # chainable: the current lr times gamma, as PyTorch
    assert seen[60:] == [0.05 * 0.1 * 0.1] * 30
    assert seen[59] == pytest.approx(0.005) and seen[60] == pytest.approx(0.0005)
    assert optimizer.param_groups[0]["lr"] == seen[-1] * 0.1  # epoch 90 reached by the last step()


def test_multistep_lr_is_pytorchs_documented_example():
    """torch docs: lr 0.05, milestones=[30, 80], gamma=0.1: 0.05 for < 30, 0.005 for < 80, then 0.0005."""
    optimizer = nn.SGD(make_net().parameters(), lr=0.05)
    scheduler = MultiStepLR(optimizer, milestones=[80, 30], gamma=0.1)
    assert scheduler.milestones == [30, 80]
    seen = [lr for (lr,) in lrs_over(scheduler, 100)]
    assert seen == [0.05] * 30 + [0.05 * 0.1] * 50 + [0.05 * 0.1 * 0.1] * 20
    assert scheduler.last_epoch == 100


def test_multistep_lr_counts_a_repeated_milestone_twice():
    optimizer = nn.SGD(make_net().parameters(), lr=1.0)
    seen = [lr for (lr,) in lrs_over(MultiStepLR(optimizer, milestones=[2, 2], gamma=0.5), 4)]
    assert seen == [1.0, 1.0, 0.25, 0.25]


def test_lambda_lr_is_pytorchs_documented_example_one_function_per_group():
    """torch docs: lambda1 = epoch // 30, lambda2 = 0.95 ** epoch on two groups: lr = base_lr · λ(epoch)."""
    optimizer = two_groups(lr=0.05, body_lr=0.01)
    scheduler = LambdaLR(optimizer, lr_lambda=[lambda epoch: epoch // 30, lambda epoch: 0.95 ** epoch])
    assert scheduler.base_lrs == [0.01, 0.05]
    seen = lrs_over(scheduler, 65)
    for epoch, (body, head) in enumerate(seen):
        assert body == 0.01 * (epoch // 30) and head == 0.05 * 0.95 ** epoch
    assert seen[0] == [0.0, 0.05] and seen[30][0] == 0.01 and seen[64][0] == 0.02


def test_one_lambda_applies_to_every_group_from_its_own_base_rate():
    optimizer = two_groups(lr=0.1, body_lr=0.01)
    scheduler = LambdaLR(optimizer, lambda epoch: 1 / (epoch + 1))
    scheduler.step()
    assert scheduler.get_last_lr() == [0.01 / 2, 0.1 / 2]
    assert [g["lr"] for g in optimizer.param_groups] == scheduler.get_last_lr()


def test_get_last_lr_is_a_copy_and_last_epoch_counts_steps():
    optimizer = two_groups()
    scheduler = StepLR(optimizer, step_size=1, gamma=0.5)
    assert scheduler.last_epoch == 0 and scheduler.get_last_lr() == [0.01, 0.05]
    scheduler.get_last_lr().append(99)
    scheduler.step()
    scheduler.step()
    assert scheduler.last_epoch == 2 and scheduler.get_last_lr() == [0.01 * 0.5 * 0.5, 0.05 * 0.5 * 0.5]
    assert scheduler.base_lrs == [0.01, 0.05]


@pytest.mark.parametrize("build, match", [
    (lambda opt: StepLR(opt, step_size=0), r"step_size must be an integer in \[1, 1000000\], got 0"),
    (lambda opt: StepLR(opt, step_size=2.0), "step_size must be an integer"),
    (lambda opt: StepLR(opt, step_size=2, gamma=-0.1), "gamma must be a finite number >= 0, got -0.1"),
    (lambda opt: MultiStepLR(opt, milestones=3), "milestones must be a list"),
    (lambda opt: MultiStepLR(opt, milestones=[-1]), r"milestones\[0\]"),
    (lambda opt: LambdaLR(opt, [lambda e: 1.0]), "a list of 2 functions"),
    (lambda opt: LambdaLR(opt, 0.5), "must be a function"),
    (lambda opt: LambdaLR(opt, lambda e: math.nan), r"lr_lambda\(0\) of group 0 must be a finite number"),
    (lambda opt: LambdaLR(opt, lambda e: "fast"), "lr_lambda"),
])
def test_bad_arguments_are_refused_with_what_was_expected(build, match):
    with pytest.raises(ValueError, match=match):
        build(two_groups())


def test_a_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="expected an optimizer with param_groups"):
        StepLR(make_net().parameters(), step_size=1)


# ---------------------------------------------------------------------------
# state_dict
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("build", [lambda opt: StepLR(opt, 2, gamma=0.5), lambda opt: MultiStepLR(opt, [1, 3]),
                                   lambda opt: LambdaLR(opt, lambda epoch: 0.9 ** epoch)])
def test_state_dict_round_trip_continues_the_same_schedule(build):
    straight = build(two_groups())
    expected = lrs_over(straight, 6)

    first = build(two_groups())
    lrs_over(first, 2)
    state = first.state_dict()
    json.dumps(state)  # numbers and lists only: no function, no object
    assert not any(callable(v) for v in state.values())
    optimizer = two_groups()
    optimizer.load_state_dict(first.optimizer.state_dict())
    resumed = build(optimizer)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 2 and lrs_over(resumed, 4) == expected[2:]


BAD_STATES = {
    "missing key": (lambda s: s.pop("last_epoch"), "expected a dict with the keys"),
    "unknown key": (lambda s: s.update(lr_lambdas=["os.system"]), "expected a dict with the keys"),
    "negative epoch": (lambda s: s.update(last_epoch=-1), r"last_epoch must be an integer in \[0, 1000000\]"),
    "epoch as float": (lambda s: s.update(last_epoch=2.0), "last_epoch must be an integer"),
    "epoch as bool": (lambda s: s.update(last_epoch=True), "last_epoch must be an integer"),
    "one rate for two groups": (lambda s: s.update(base_lrs=[0.1]), "base_lrs must be a list of 2 rates"),
    "NaN rate": (lambda s: s.update(base_lrs=[0.1, math.nan]), r"base_lrs\[1\] must be a finite number >= 0"),
    "negative last rate": (lambda s: s.update(_last_lr=[-0.1, 0.1]), r"_last_lr\[0\]"),
    "string gamma": (lambda s: s.update(gamma="0.1"), "gamma must be a finite number"),
    "zero step size": (lambda s: s.update(step_size=0), "step_size must be an integer"),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_load_state_dict_refuses_a_bad_state_and_changes_nothing(case):
    scheduler = StepLR(two_groups(), step_size=2)
    scheduler.step()
    state = scheduler.state_dict()
    mutate, match = BAD_STATES[case]
    mutate(state)
    before = copy.deepcopy(scheduler.state_dict())
    with pytest.raises(ValueError, match=match):
        scheduler.load_state_dict(state)
    assert scheduler.state_dict() == before


def test_matches_torch_when_installed():
    torch = pytest.importorskip("torch")
    for build_ours, build_torch in [
        (lambda o: StepLR(o, 3, gamma=0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.3)),
        (lambda o: MultiStepLR(o, [2, 5, 5]), lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5])),
        (lambda o: LambdaLR(o, lambda e: 0.9 ** e), lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9 ** e)),
    ]:
        ours = build_ours(two_groups(lr=0.07, body_lr=0.013))
        weight = torch.nn.Parameter(torch.zeros(2))
        theirs = build_torch(torch.optim.SGD([{"params": [weight], "lr": 0.013},
                                              {"params": [torch.nn.Parameter(torch.zeros(2))]}], lr=0.07))
        for _ in range(12):
            assert ours.get_last_lr() == theirs.get_last_lr()
            theirs.optimizer.step()
            ours.step()
            theirs.step()


# ---------------------------------------------------------------------------
# fit and checkpoints
# ---------------------------------------------------------------------------


def data(n=48, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def run(epochs, *, scheduler_args=(1, 0.5), momentum=0.9, checkpoint=None, resume=None):
    net = make_net(seed=3)
    optimizer = nn.SGD(net.parameters(), lr=0.1, momentum=momentum)
    scheduler = StepLR(optimizer, *scheduler_args)
    loader = DataLoader(*data(), 8, shuffle=True, seed=5)
    history = nn.fit(net, nn.CrossEntropyLoss(), optimizer, loader, epochs, progress=False, scheduler=scheduler,
                     checkpoint=checkpoint, resume=resume)
    return net, optimizer, scheduler, history


def test_fit_steps_the_scheduler_after_each_epochs_optimizer_steps():
    """gamma=0 after epoch 1: epoch 1 trains at the base rate, epoch 2 at lr 0 (no momentum) changes nothing."""
    one, _, scheduler, _ = run(1, scheduler_args=(1, 0.0), momentum=0.0)
    assert scheduler.last_epoch == 1 and scheduler.get_last_lr() == [0.0]
    untrained = make_net(seed=3)
    assert not np.array_equal(one.fc1.weight.data, untrained.fc1.weight.data)
    two, optimizer, scheduler, _ = run(2, scheduler_args=(1, 0.0), momentum=0.0)
    assert scheduler.last_epoch == 2 and optimizer.param_groups[0]["lr"] == 0.0
    for (name, a), (_, b) in zip(one.named_parameters(), two.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_resume_with_a_scheduler_is_bit_identical_to_training_straight(tmp_path):
    path = tmp_path / "run.safetensors"
    straight, straight_opt, straight_sched, straight_history = run(3)
    run(1, checkpoint=path)
    header = nn.serialization.load_file(path)[1]
    assert header["scheduler"] == {"class": "StepLR", "state": {"last_epoch": 1, "base_lrs": [0.1],
                                                                "_last_lr": [0.05], "step_size": 1, "gamma": 0.5}}
    nn.manual_seed(999)
    resumed, resumed_opt, resumed_sched, resumed_history = run(3, resume=path, checkpoint=path)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    assert resumed_sched.state_dict() == straight_sched.state_dict()
    assert resumed_sched.last_epoch == 3 and resumed_opt.param_groups[0]["lr"] == 0.1 * 0.5 ** 3
    assert resumed_history.batch_loss == straight_history.batch_loss


def test_a_checkpoint_and_a_scheduler_must_agree(tmp_path):
    with_scheduler, without = tmp_path / "with.safetensors", tmp_path / "without.safetensors"
    net, optimizer, scheduler, _ = run(1, checkpoint=with_scheduler)
    save_checkpoint(without, net, optimizer, epoch=1)
    with pytest.raises(ValueError, match="written with a 'StepLR' learning-rate scheduler; pass the same scheduler"):
        load_checkpoint(with_scheduler, net, optimizer)
    load_checkpoint(with_scheduler, net)  # weights only: no optimizer, no schedule to follow
    with pytest.raises(ValueError, match="holds no scheduler state"):
        load_checkpoint(without, net, optimizer, scheduler=scheduler)
    with pytest.raises(ValueError, match="holds a 'StepLR' state, the scheduler is a MultiStepLR"):
        load_checkpoint(with_scheduler, net, optimizer, scheduler=MultiStepLR(optimizer, [3]))


def _set(key, value):
    def mutate(saved):
        if value is DELETE:
            del saved["state"][key]
        else:
            saved["state"][key] = value
    return mutate


DELETE = object()
HOSTILE = {
    "scheduler not an object": (lambda saved: saved.clear() or saved.update(bogus=1), "unknown keys"),
    "scheduler of another class": (lambda saved: saved.update({"class": "CosineAnnealingLR"}),
                                   "holds a 'CosineAnnealingLR' state, the scheduler is a StepLR"),
    "state a list": (lambda saved: saved.update(state=[1, 2]), "state must be an object"),
    "state with a huge number of keys": (lambda saved: saved.update(state={str(i): 0 for i in range(10_000)}),
                                         "at most 100 entries"),
    "missing last_epoch": (_set("last_epoch", DELETE), "expected a dict with the keys"),
    "code named in the state": (_set("lr_lambdas", "os.system"), "expected a dict with the keys"),
    "negative last_epoch": (_set("last_epoch", -5), r"last_epoch must be an integer in \[0, 1000000\]"),
    "billion epochs": (_set("last_epoch", 10**9), "last_epoch must be an integer"),
    "last_epoch as string": (_set("last_epoch", "1"), "last_epoch must be an integer"),
    "NaN base rate": (_set("base_lrs", [math.nan]), r"base_lrs\[0\] must be a finite number|NaN"),
    "infinite last rate": (_set("_last_lr", [math.inf]), r"_last_lr\[0\] must be a finite number|infinity"),
    "negative base rate": (_set("base_lrs", [-0.1]), r"base_lrs\[0\] must be a finite number >= 0, got -0.1"),
    "rates for more groups": (_set("base_lrs", [0.1] * 100_000), "base_lrs must be a list of 1 rates"),
    "rate as a nested object": (_set("base_lrs", [{"__ndarray__": [1], "dtype": "(16000,16000)f8"}]), r"base_lrs\[0\]"),
    "negative gamma": (_set("gamma", -1.0), "gamma must be a finite number >= 0"),
    "step size zero": (_set("step_size", 0), "step_size must be an integer"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_scheduler_state_is_refused_and_changes_nothing(case, tmp_path):
    good = tmp_path / "good.safetensors"
    run(1, checkpoint=good)
    arrays, header = nn.serialization.load_file(good)
    mutate, match = HOSTILE[case]
    mutate(header["scheduler"])
    path = tmp_path / "hostile.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"nnscratch": json.dumps(header, allow_nan=True)})

    net = make_net(seed=4)
    optimizer = nn.SGD(net.parameters(), lr=0.3, momentum=0.9)
    scheduler = StepLR(optimizer, 3, gamma=0.2)
    before = ({n: p.data.copy() for n, p in net.named_parameters()}, copy.deepcopy(optimizer.state_dict()),
              scheduler.state_dict())
    with pytest.raises(ValueError, match=match) as error:
        load_checkpoint(path, net, optimizer, scheduler=scheduler)
    assert "hostile.safetensors" in str(error.value)
    for name, param in net.named_parameters():
        np.testing.assert_array_equal(param.data, before[0][name])
    assert optimizer.state_dict()["param_groups"] == before[1]["param_groups"] and not optimizer.state
    assert scheduler.state_dict() == before[2]


def test_a_failure_after_the_scheduler_was_set_puts_it_back(tmp_path):
    path = tmp_path / "good.safetensors"
    run(2, checkpoint=path)

    class BrokenLoader:
        epoch = 0

        def set_epoch(self, epoch):
            raise RuntimeError("disk on fire")

    net = make_net(seed=4)
    optimizer = nn.SGD(net.parameters(), lr=0.3, momentum=0.9)
    scheduler = StepLR(optimizer, 3, gamma=0.2)
    before = scheduler.state_dict()
    with pytest.raises(RuntimeError, match="disk on fire"):
        load_checkpoint(path, net, optimizer, BrokenLoader(), scheduler=scheduler)
    assert scheduler.state_dict() == before and optimizer.param_groups[0]["lr"] == 0.3

"""The traps a newcomer falls into (issue 9, part 4): each answers with an error or a warning
that says what to do. One section per trap; the message is asserted, not only the exception."""
import json
import math
import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.nn.losses import LossValue

from strategies import random_images


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------------------
# loss.backward(): there is no autograd
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss, input, target", [
    (nn.CrossEntropyLoss(), np.array([[2.0, -1.0, 0.5]]), np.array([0])),
    (nn.NLLLoss(), log_softmax(np.array([[2.0, -1.0, 0.5]])), np.array([2])),
    (nn.MSELoss(), np.array([[1.0, 2.0]], dtype=np.float32), np.array([[0.5, 2.5]], dtype=np.float32)),
], ids=["CrossEntropyLoss", "NLLLoss", "MSELoss"])
def test_loss_value_is_a_float_whose_backward_says_what_to_call(loss, input, target):
    value = loss(input, target)
    assert isinstance(value, float) and isinstance(value, LossValue)
    with pytest.raises(TypeError, match=r"no autograd.*model\.backward\(criterion\.backward\(\)\)"):
        value.backward()
    plain = value.item()
    assert type(plain) is float and plain == value > 0
    # a float everywhere else: arithmetic, tests, formatting, JSON, pickle
    assert type(value * 2) is float and value * 2 == 2 * plain and math.isfinite(value)
    assert f"{value:.4f}" == f"{plain:.4f}" and "%.3f" % value == "%.3f" % plain and repr(value) == repr(plain)
    assert json.dumps({"loss": value}) == json.dumps({"loss": plain})
    assert pickle.loads(pickle.dumps(value)) == plain
    assert loss.backward().shape == np.shape(input)  # the criterion's backward is the one to call


# ---------------------------------------------------------------------------
# NLLLoss fed logits (or probabilities)
# ---------------------------------------------------------------------------


def test_nll_loss_refuses_logits_and_probabilities():
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((8, 10)).astype(np.float32)
    target = rng.integers(0, 10, 8)
    with pytest.raises(ValueError, match=r"log-probabilities.*use CrossEntropyLoss.*LogSoftmax"):
        nn.NLLLoss()(logits, target)
    probabilities = np.exp(log_softmax(logits))
    with pytest.raises(ValueError, match=r"row 0 has log Σ_k exp\(y_k\) = .*8 of 8 rows"):
        nn.NLLLoss()(probabilities, target)
    one_bad = log_softmax(logits)
    one_bad[5] += 0.01  # probabilities summing to 1.01
    with pytest.raises(ValueError, match=r"row 5 .*1 of 8 rows"):
        nn.NLLLoss(reduction="sum")(one_bad, target)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0, 1000.0])
def test_nll_loss_accepts_log_softmax_outputs_and_gradient_check_nudges(dtype, scale):
    rng = np.random.default_rng(1)
    x = (scale * rng.standard_normal((64, 1000))).astype(dtype)
    target = rng.integers(0, 1000, 64)
    log_probs = nn.LogSoftmax(dim=1)(x)
    assert log_probs.dtype == dtype
    expected = -np.mean(log_probs[np.arange(64), target], dtype=np.float64)
    assert nn.NLLLoss()(log_probs, target) == pytest.approx(expected, rel=1e-5)
    nudged = log_probs.astype(np.float64)
    nudged[:, 0] += 1e-6  # what a gradient check does to each element in turn
    nn.NLLLoss()(nudged, target)
    nudged[:, 0] -= 2e-6
    nn.NLLLoss()(nudged, target)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nll_loss_lets_a_diverged_row_through_as_a_non_finite_loss():
    log_probs = log_softmax(np.array([[1.0, 2.0], [0.5, 0.1]]))
    log_probs[1] = np.nan  # a diverged network: fit reports TrainingDivergedError on the loss
    assert math.isnan(nn.NLLLoss()(log_probs, np.array([0, 1])))


# ---------------------------------------------------------------------------
# extract_features / cut: `before` names the first layer NOT run
# ---------------------------------------------------------------------------


def test_extract_features_before_is_the_first_layer_not_run():
    from nnscratch import transfer

    nn.manual_seed(0)
    net = nn.models.seed_net()
    x = random_images(3)
    features = transfer.extract_features(net, x, before="fc2")
    assert features.shape == (3, 128)  # what feeds fc2 (128 inputs), fc2 itself not run
    assert transfer.cut(net, before="fc2").names()[-1] == "dropout2"
    with pytest.raises(ValueError, match=r"before='fc3'.*first layer NOT run, one of \['conv1', .*'log_softmax'\]"):
        transfer.extract_features(net, x, before="fc3")
    with pytest.raises(TypeError, match="upto"):  # the misread name is gone, not silently accepted
        transfer.extract_features(net, x, upto="fc2")


# ---------------------------------------------------------------------------
# param_groups / fine_tune: the head defaults to the layer replace_head replaces
# ---------------------------------------------------------------------------


def net_with_head_named(name):
    nn.manual_seed(0)
    return nn.Sequential(OrderedDict([("flat", nn.Flatten()), ("hidden", nn.Dense(16, 8)), ("relu", nn.ReLU()),
                                      (name, nn.Dense(8, 3))]))


def test_param_groups_and_fine_tune_default_to_the_replaced_head():
    from nnscratch import transfer
    from nnscratch.data import DataLoader

    net = net_with_head_named("classifier")
    assert transfer.head_name(net) == "classifier"
    body, head = transfer.param_groups(net, lr=0.1, body_lr=0.01)
    assert head["params"] == [net.classifier.weight, net.classifier.bias] and head["lr"] == 0.1
    assert body["params"] == [net.hidden.weight, net.hidden.bias] and body["lr"] == 0.01

    rng = np.random.default_rng(0)
    loader = DataLoader(rng.standard_normal((16, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 16), 8)
    hidden = net.hidden.weight.data.copy()
    transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=1, full_epochs=0, lr=0.1, body_lr=0.01)
    assert transfer.trainable_parameters(net) == ["classifier.weight", "classifier.bias"]
    np.testing.assert_array_equal(net.hidden.weight.data, hidden)  # the body was frozen

    for call, caller in ((lambda: transfer.param_groups(net, 0.1, head="fc2"), "param_groups"),
                         (lambda: transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=1, full_epochs=0,
                                                     lr=0.1, body_lr=0.01, head=("fc1", "fc2")), "fine_tune")):
        with pytest.raises(ValueError, match=rf"{caller}: head=.*'fc2'.* names no layer of the model; its layers are "
                                             r"\['flat', 'hidden', 'relu', 'classifier'\]; head=None takes .*'classifier'"):
            call()


# ---------------------------------------------------------------------------
# fit: an optimizer built before replace_head never trains the new head
# ---------------------------------------------------------------------------


def tiny_problem():
    rng = np.random.default_rng(0)
    from nnscratch.data import DataLoader

    return DataLoader(rng.standard_normal((16, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 16), 8)


def test_fit_refuses_trainable_parameters_outside_the_optimizer():
    from nnscratch import transfer

    net = net_with_head_named("fc2")
    optimizer = nn.SGD(net.parameters(), lr=0.1, momentum=0.9)
    transfer.replace_head(net, 3)  # new fc2 Parameters, unknown to the optimizer
    before = net.hidden.weight.data.copy()
    with pytest.raises(ValueError, match=r"fit: the trainable parameters fc2\.weight, fc2\.bias are in no parameter "
                                         r"group.*Build the optimizer after replace_head.*add_param_group"):
        nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1, progress=False)
    np.testing.assert_array_equal(net.hidden.weight.data, before)  # refused before any step

    optimizer.add_param_group({"params": net.fc2.parameters(), "lr": 0.5})
    head = net.fc2.weight.data.copy()
    nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1, progress=False)
    assert not np.array_equal(net.fc2.weight.data, head) and optimizer.param_groups[1]["lr"] == 0.5


def test_fit_accepts_frozen_parameters_outside_the_optimizer():
    from nnscratch import transfer

    net = net_with_head_named("fc2")
    transfer.freeze(net, "hidden")
    before = net.hidden.weight.data.copy()
    optimizer = nn.SGD(net.fc2.parameters(), lr=0.1)  # only the trainable head
    history = nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1, progress=False)
    assert history.epochs == 1
    np.testing.assert_array_equal(net.hidden.weight.data, before)
    transfer.unfreeze(net, "hidden")  # now it must train, and the optimizer lacks it
    with pytest.raises(ValueError, match=r"hidden\.weight, hidden\.bias are in no parameter group"):
        nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1, progress=False)


def test_sgd_add_param_group_checks_like_the_constructor():
    net = net_with_head_named("fc2")
    optimizer = nn.SGD(net.hidden.parameters(), lr=0.1, momentum=0.9)
    optimizer.add_param_group({"params": net.fc2.parameters()})
    assert optimizer.param_groups[1]["lr"] == 0.1 and optimizer.param_groups[1]["momentum"] == 0.9
    with pytest.raises(ValueError, match="more than one group"):
        optimizer.add_param_group({"params": [net.fc2.bias]})
    with pytest.raises(ValueError, match="lr, momentum and weight_decay must be >= 0"):
        optimizer.add_param_group({"params": [], "lr": -1.0})
    assert len(optimizer.param_groups) == 2


# ---------------------------------------------------------------------------
# fit's progress bar in a notebook
# ---------------------------------------------------------------------------


def fake_ipython(monkeypatch, shell):
    import types

    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_jupyter_kernel_detection(monkeypatch):
    import types

    from nnscratch.training import in_jupyter_kernel

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not in_jupyter_kernel()
    fake_ipython(monkeypatch, None)  # IPython imported, no shell running
    assert not in_jupyter_kernel()
    fake_ipython(monkeypatch, types.SimpleNamespace())  # terminal IPython: a shell without a kernel
    assert not in_jupyter_kernel()
    fake_ipython(monkeypatch, types.SimpleNamespace(kernel=object()))  # a Jupyter kernel's shell
    assert in_jupyter_kernel()


def test_progress_default_terminal_kernel_and_environment(monkeypatch):
    from nnscratch.training import loop as training

    monkeypatch.delenv("NNSCRATCH_PROGRESS", raising=False)
    for tty, kernel, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        monkeypatch.setattr(training, "in_jupyter_kernel", lambda kernel=kernel: kernel)
        assert training.show_progress_by_default() is expected, (tty, kernel)
    monkeypatch.setenv("NNSCRATCH_PROGRESS", "0")  # the notebook build: no bars in a kernel
    assert training.show_progress_by_default() is False
    monkeypatch.setenv("NNSCRATCH_PROGRESS", "1")
    monkeypatch.setattr(training, "in_jupyter_kernel", lambda: False)
    assert training.show_progress_by_default() is True
    monkeypatch.setenv("NNSCRATCH_PROGRESS", "yes")
    with pytest.raises(ValueError, match="NNSCRATCH_PROGRESS must be 0 or 1, got 'yes'"):
        training.show_progress_by_default()


def test_fit_uses_the_notebook_aware_bar_in_a_kernel(monkeypatch, capsys):
    import types

    import tqdm as tqdm_package

    from nnscratch.training import loop as training

    made = []

    class RecordingBar(tqdm_package.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("disable"))
            super().__init__(*args, **kwargs)

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=RecordingBar))
    monkeypatch.delenv("NNSCRATCH_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    net = net_with_head_named("fc2")
    optimizer = nn.SGD(net.parameters(), lr=0.1)

    monkeypatch.setattr(training, "in_jupyter_kernel", lambda: False)
    nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1)
    assert made == [] and capsys.readouterr().err == ""  # a pipe, not a kernel: no bar
    monkeypatch.setattr(training, "in_jupyter_kernel", lambda: True)
    nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1)
    assert made == [False] and "epoch 1/1" in capsys.readouterr().err  # tqdm.auto's bar, shown
    monkeypatch.setenv("NNSCRATCH_PROGRESS", "0")
    nn.fit(net, nn.CrossEntropyLoss(), optimizer, tiny_problem(), 1)
    assert made == [False] and capsys.readouterr().err == ""

"""The traps a newcomer falls into (issue 9, part 4): each answers with an error or a warning
that says what to do. One section per trap; the message is asserted, not only the exception."""
import json
import math
import pickle

import numpy as np
import pytest

import nnscratch as nn
from nnscratch.losses import LossValue


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

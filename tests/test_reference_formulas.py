"""The formulas moved into :mod:`nnscratch.backends.reference` (softmax, log-softmax, the losses, the bias
gradients) are what the layers, the losses and ``predict_proba`` compute, bit for bit, on both
backends; and every new backward agrees with centered finite differences of its forward in float64."""
import numpy as np
import pytest

import nnscratch as nn
from nnscratch import reference
from nnscratch.gradient_check import numeric_gradient, relative_error

DTYPES = [np.float32, np.float64]
GRADCHECK_TOLERANCE = 1e-7  # a correct float64 backward gives about 1e-9; a wrong one 1e-2 or more


def assert_bits_equal(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.tobytes() == expected.tobytes(), f"largest difference {np.abs(actual - expected).max()}"


def random(rng, shape, dtype, scale=3.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ----------------------------------------------------------------------------- the library computes the reference

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("layer_cls, forward, backward", [
    (nn.Softmax, reference.softmax_forward, reference.softmax_backward),
    (nn.LogSoftmax, reference.log_softmax_forward, reference.log_softmax_backward),
], ids=["softmax", "log_softmax"])
def test_softmaxes_are_the_reference(backend, layer_cls, forward, backward, dim, dtype):
    rng = np.random.default_rng(dim + 7)
    x, g = random(rng, (4, 5, 3), dtype), random(rng, (4, 5, 3), dtype, 1.0)
    layer = layer_cls(dim=dim)
    y = layer(x)
    assert_bits_equal(y, forward(x, dim))
    assert_bits_equal(layer.backward(g), backward(y, g, dim))


def _labels_case(rng, dtype, n=6, classes=4):
    return random(rng, (n, classes), dtype), rng.integers(0, classes, size=n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction, scale", [("mean", 1 / 6), ("sum", 1.0)])
@pytest.mark.parametrize("name", ["CrossEntropyLoss", "NLLLoss", "MSELoss"])
def test_losses_are_the_reference(backend, name, reduction, scale, dtype):
    rng = np.random.default_rng(3)
    z, t = _labels_case(rng, dtype)
    if name == "CrossEntropyLoss":
        forward, backward = reference.cross_entropy_forward, reference.cross_entropy_backward
    elif name == "NLLLoss":
        z = reference.log_softmax_forward(z, 1)
        forward, backward = reference.nll_forward, reference.nll_backward
    else:
        t = random(rng, z.shape, dtype)
        scale = 1 / z.size if reduction == "mean" else 1.0
        forward, backward = reference.mse_forward, reference.mse_backward
    criterion = getattr(nn, name)(reduction=reduction)
    value = criterion(z, t)
    expected = forward(z, t, scale)
    assert type(value) is nn.nn.losses.LossValue and isinstance(expected, np.generic) and expected.dtype == dtype
    assert_bits_equal(np.float64(value), np.float64(expected))
    assert_bits_equal(criterion.backward(), backward(z, t, scale))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_bias_gradient_is_the_reference(backend, dtype):
    rng = np.random.default_rng(5)
    layer = nn.Dense(4, 3, dtype=dtype, generator=rng)
    x, g = random(rng, (7, 4), dtype), random(rng, (7, 3), dtype)
    layer(x)
    layer.backward(g)
    assert_bits_equal(layer.bias.grad, reference.linear_bias_backward(g))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_bias_gradient_is_the_reference(backend, dtype):
    rng = np.random.default_rng(6)
    layer = nn.Conv2d(2, 3, 3, padding=1, dtype=dtype, generator=rng)
    x = random(rng, (2, 2, 5, 4), dtype)
    y = layer(x)
    g = random(rng, y.shape, dtype)
    layer.backward(g)
    # the compiled twin sums in another order (tests/test_kernels_equal.py): equal to rounding
    expected = reference.conv2d_bias_backward(g.astype(np.float64)).astype(dtype)
    np.testing.assert_allclose(layer.bias.grad, expected, rtol=2e-6 if dtype == np.float32 else 1e-13, atol=0)
    assert layer.bias.grad.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_proba_is_the_reference_softmax(backend, dtype):
    rng = np.random.default_rng(8)
    model = nn.Sequential(nn.Flatten(), nn.Dense(12, 5, dtype=dtype, generator=rng))
    images = random(rng, (9, 1, 3, 4), dtype)
    proba = nn.training.predict_proba(model, images, batch_size=len(images))
    assert_bits_equal(proba, reference.softmax_forward(model.eval()(images), 1))


# ----------------------------------------------------------------------------- gradient checks of the new backwards

def _gradcheck(f, analytic, x):
    error = relative_error(analytic, numeric_gradient(f, x))
    assert error < GRADCHECK_TOLERANCE, f"relative error {error:.3g}"


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("forward, backward", [
    (reference.softmax_forward, reference.softmax_backward),
    (reference.log_softmax_forward, reference.log_softmax_backward),
], ids=["softmax", "log_softmax"])
def test_softmax_backwards_gradcheck(forward, backward, dim):
    rng = np.random.default_rng(11)
    x, g = random(rng, (3, 4, 2), np.float64), random(rng, (3, 4, 2), np.float64, 1.0)
    _gradcheck(lambda: float((forward(x, dim) * g).sum()), backward(forward(x, dim), g, dim), x)


@pytest.mark.parametrize("scale", [1 / 5, 1.0])
@pytest.mark.parametrize("forward, backward", [
    (reference.cross_entropy_forward, reference.cross_entropy_backward),
    (reference.nll_forward, reference.nll_backward),
    (reference.mse_forward, reference.mse_backward),
], ids=["cross_entropy", "nll", "mse"])
def test_loss_backwards_gradcheck(forward, backward, scale):
    rng = np.random.default_rng(12)
    y, t = _labels_case(rng, np.float64, n=5)
    if forward is reference.mse_forward:
        t = random(rng, y.shape, np.float64)
    _gradcheck(lambda: float(forward(y, t, scale)), backward(y, t, scale), y)


def test_linear_bias_backward_gradcheck():
    rng = np.random.default_rng(13)
    x, w, b = (random(rng, s, np.float64) for s in [(6, 4), (3, 4), (3,)])
    g = random(rng, (6, 3), np.float64)
    _gradcheck(lambda: float((reference.linear_forward(x, w, b) * g).sum()), reference.linear_bias_backward(g), b)


def test_conv2d_bias_backward_gradcheck():
    rng = np.random.default_rng(14)
    x, w, b = (random(rng, s, np.float64) for s in [(2, 2, 5, 4), (3, 2, 3, 3), (3,)])
    g = random(rng, (2, 3, 5, 4), np.float64)
    _gradcheck(lambda: float((reference.conv2d_forward(x, w, b, (1, 1), (1, 1)) * g).sum()),
               reference.conv2d_bias_backward(g), b)

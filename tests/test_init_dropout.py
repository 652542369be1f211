"""Tests of initialization (PyTorch's defaults, seeded) and of Dropout (inverted scaling, identity in
eval mode and at p=0, reproducible masks, p checked).
"""
import math

import numpy as np
import pytest

import nnscratch
from nnscratch import Conv2d, Dense, Dropout, models


def rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- initialization

@pytest.mark.parametrize("name, fan_in", [("conv1", 9), ("conv2", 32 * 9), ("fc1", 9216), ("fc2", 128)])
def test_kaiming_uniform_bounds_and_statistics(name, fan_in):
    nnscratch.manual_seed(0)
    layer = getattr(models.seed_net(), name)
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=√5): √(2/(1+5))·√(3/fan_in) = 1/√fan_in
    for param in (layer.weight, layer.bias):
        values = param.data
        # float32 rounding is monotonic, so |v| <= bound in float64 implies |v32| <= float32(bound)
        assert np.abs(values).max() <= np.float32(bound)
    w = layer.weight.data.astype(np.float64)
    if w.size >= 1000:
        # U(-b, b): mean 0, standard deviation b/√3, and it fills the interval
        n = w.size
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert np.abs(w).max() > 0.98 * bound
        assert w.min() < 0 < w.max()


def test_bias_uses_the_layer_fan_in():
    nnscratch.manual_seed(0)
    conv = Conv2d(4, 512, 5)  # fan_in 100 -> bound 0.1
    dense = Dense(16, 2000)  # fan_in 16 -> bound 0.25
    assert np.abs(conv.bias.data).max() <= np.float32(0.1)
    assert np.abs(conv.bias.data).max() > 0.09
    assert np.abs(dense.bias.data).max() <= np.float32(0.25)
    assert np.abs(dense.bias.data).max() > 0.24


def test_manual_seed_makes_networks_identical():
    nnscratch.manual_seed(0)
    a = models.seed_net()
    nnscratch.manual_seed(0)
    b = models.seed_net()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    nnscratch.manual_seed(1)
    c = models.seed_net()
    assert not np.array_equal(a.conv1.weight.data, c.conv1.weight.data)
    # a layer given its own generator ignores the global one
    d1 = Dense(5, 4, generator=np.random.default_rng(7))
    nnscratch.manual_seed(123)
    d2 = Dense(5, 4, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(d1.weight.data, d2.weight.data)
    assert Dense(5, 4, dtype=np.float64).weight.dtype == np.float64


# ----------------------------------------------------------------------------- Dropout

@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_inverted_scaling(p):
    d = Dropout(p)
    d.manual_seed(0)
    x = rng().uniform(0.5, 1.5, size=(200, 500)).astype(np.float32)
    y = d(x)
    kept = y != 0
    assert kept.mean() == pytest.approx(1 - p, abs=0.01)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert y.mean() == pytest.approx(x.mean(), rel=0.02)  # expectation preserved
    # the backward pass applies the same mask and scale
    g = rng(1).standard_normal(x.shape).astype(np.float32)
    gx = d.backward(g)
    np.testing.assert_array_equal(gx == 0, ~kept | (g == 0))
    np.testing.assert_allclose(gx[kept], g[kept] / (1 - p), rtol=1e-6)
    assert y.dtype == np.float32 and d(x.astype(np.float64)).dtype == np.float64


def test_dropout_p_zero_is_identity():
    x = rng().standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(Dropout(0.0)(x), x)


def test_dropout_is_reproducible():
    x = np.ones((16, 32), dtype=np.float32)
    nnscratch.manual_seed(5)
    a = Dropout(0.5)(x)
    nnscratch.manual_seed(5)
    b = Dropout(0.5)(x)
    np.testing.assert_array_equal(a, b)
    d = Dropout(0.5)
    d.manual_seed(9)
    c = d(x)
    d.manual_seed(9)
    np.testing.assert_array_equal(d(x), c)
    assert not np.array_equal(d(x), c)  # the next mask is a fresh draw
    e = Dropout(0.5, generator=np.random.default_rng(9))
    np.testing.assert_array_equal(e(x), c)
    # two seeded full-network training passes agree
    net = models.seed_net()
    xi = rng().standard_normal((2, 1, 28, 28)).astype(np.float32)
    nnscratch.manual_seed(3)
    y1 = net(xi)
    nnscratch.manual_seed(3)
    np.testing.assert_array_equal(net(xi), y1)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_p_validation(p):
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p)

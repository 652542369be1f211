"""Winograd convolution (``nnscratch/backends/reference_winograd.py`` and its compiled twin
``_kernels_winograd.pxi`` with ``_kernels_winograd_transforms.pxi``).

* The NumPy Winograd equals the direct reference: tight in float64, within a measured bound in float32.
* The compiled Winograd equals the NumPy Winograd within the same bounds. Not bit for bit and not
  within a few ulps in float32: both sum the same terms, but in different orders (the compiled
  transforms write each matrix row out, NumPy's ``matmul`` and the GEMMs block their sums their own
  way), and F(4×4, 3×3)'s transforms multiply values by up to 8 before they cancel, so a different
  order moves the result by up to the size of Winograd's own rounding error.
* Results are bit-identical for 1 and 2 threads; the layer's gradients pass float64 centred
  differences on both backends; ``"auto"`` picks Winograd only where the rule says; bad requests
  raise errors that name the layer.

Float32 bounds, ``max|a - b| <= bound · max(1, max|b|)`` on standard-normal data with up to 8
channels: the largest values seen over 300 random shapes were 4.5e-7 (F(2×2)) and 6.3e-6 (F(4×4))
against the direct float64 reference (the direct float32 method: 4.3e-7), and 4.8e-6 between the
compiled and the NumPy F(4×4); the bounds are about 4× those.
"""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnscratch as nn
from nnscratch import ops
from nnscratch import reference as R
from nnscratch.backends import conv_algorithm
from nnscratch.backends import reference_winograd as RW
from nnscratch.gradient_check import check_module

from strategies import compiled_kernels, num_threads

SETTINGS = dict(deadline=None, derandomize=True, database=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FLOAT32_BOUND = {2: 2e-6, 4: 2.5e-5}  # tile size m of F(m×m, 3×3) -> bound (see the module docstring)
FLOAT64_BOUND = 1e-12
GRADCHECK_TOL = 1e-6


def relative_error(actual, expected):
    """``max|actual - expected| / max(1, max|expected|)``, in float64."""
    assert actual.shape == expected.shape, f"shape {actual.shape} vs {expected.shape}"
    if expected.size == 0:
        return 0.0
    expected = expected.astype(np.float64)
    return float(np.abs(actual.astype(np.float64) - expected).max() / max(1.0, np.abs(expected).max()))


@st.composite
def winograd_cases(draw, max_n=3, max_hw=11, max_channels=8):
    """A 3×3 stride-1 convolution: any padding 0-3 per side, odd and even sizes, outputs that tiles of
    2 or 4 do not divide, batch and channels down to 1; ``m`` the tile size, the dtype."""
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return dict(
        n=draw(st.integers(1, max_n)), c=draw(st.integers(1, max_channels)), f=draw(st.integers(1, max_channels)),
        h=draw(st.integers(max(1, 3 - 2 * ph), max_hw)), w=draw(st.integers(max(1, 3 - 2 * pw), max_hw)),
        padding=(ph, pw), m=draw(st.sampled_from(RW.TILE_SIZES)), bias=draw(st.booleans()),
        dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**32 - 1)),
    )


def case_arrays(case):
    """``(x, weight, bias or None, grad_y)`` of a case, standard normal in its dtype."""
    rng = np.random.default_rng(case["seed"])
    dt, (ph, pw) = case["dtype"], case["padding"]
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dt)
    weight = rng.standard_normal((case["f"], case["c"], 3, 3)).astype(dt)
    bias = rng.standard_normal(case["f"]).astype(dt) if case["bias"] else None
    grad_y = rng.standard_normal((case["n"], case["f"], case["h"] + 2 * ph - 2, case["w"] + 2 * pw - 2)).astype(dt)
    return x, weight, bias, grad_y


def bound(case):
    return FLOAT64_BOUND if case["dtype"] == np.float64 else FLOAT32_BOUND[case["m"]]


def assert_within(actual, expected, case, what):
    error = relative_error(actual, expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} vs {expected.dtype}"
    assert error <= bound(case), f"{what}: relative error {error:.3e} > {bound(case):.1e} for {case}"


# ----------------------------------------------------------------------------- NumPy Winograd == direct

@settings(**SETTINGS)
@given(case=winograd_cases())
def test_reference_winograd_equals_direct_reference(case):
    x, weight, bias, grad_y = case_arrays(case)
    p, m = case["padding"], case["m"]
    assert_within(RW.conv2d_forward(x, weight, bias, p, m), R.conv2d_forward(x, weight, bias, (1, 1), p), case, "y")
    got_x, got_w = RW.conv2d_backward(x, weight, grad_y, p, m=m)
    exp_x, exp_w = R.conv2d_backward(x, weight, grad_y, (1, 1), p)
    assert_within(got_x, exp_x, case, "grad_x")
    assert_within(got_w, exp_w, case, "grad_weight")


def test_float32_error_on_the_seed_conv2_is_bounded():
    """The seed's conv2 (32 → 64 channels, 26×26, batch 8): more channels than the hypothesis cases."""
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((8, 32, 26, 26)), rng.uniform(-1, 1, (64, 32, 3, 3)) / np.sqrt(32 * 9)
    expected = R.conv2d_forward(x, weight, None, (1, 1), (0, 0))
    for m in RW.TILE_SIZES:
        y = RW.conv2d_forward(x.astype(np.float32), weight.astype(np.float32), None, (0, 0), m)
        assert relative_error(y, expected) <= FLOAT32_BOUND[m]


def test_transform_matrices_compute_minimal_filtering():
    """1-D F(m, 3): ``A^T [(G g) ⊙ (B^T d)]`` is the correlation of d with g, with α = m + 2 products."""
    rng = np.random.default_rng(0)
    for m in RW.TILE_SIZES:
        bt, g, at = RW.matrices(m)
        d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
        expected = [d[i:i + 3] @ k for i in range(m)]
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- compiled == NumPy Winograd

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", RW.TILE_SIZES)
@pytest.mark.parametrize("f, c", [(1, 1), (3, 5), (64, 32), (7, 37), (128, 128)])
def test_compiled_filter_transforms_equal_the_reference(m, f, c, dtype):
    """``U = G w G^T`` and its adjoint, compiled in chunks of filters (a last, shorter chunk; more
    filters than one chunk): the reference's bits (the same products added in the same order, in
    double), with 1 and 2 threads."""
    K = compiled_kernels()
    rng = np.random.default_rng(f * 1000 + c)
    weight = rng.standard_normal((f, c, 3, 3)).astype(dtype)
    grad_u = rng.standard_normal(((m + 2) ** 2, f, c)).astype(dtype)
    expected_u = RW.transform_filters(weight, m)
    expected_grad = RW.filter_gradient(grad_u, m)
    results = []
    for threads in (1, 2):
        with num_threads(threads):
            results.append((K.transform_filters(weight, m), K.filter_gradient(grad_u, m)))
    for (u, grad), (u2, grad2) in zip(results, results[1:]):
        assert np.array_equal(u, u2) and np.array_equal(grad, grad2), "1 and 2 threads differ"
    u, grad = results[0]
    assert u.dtype == grad.dtype == dtype and u.shape == expected_u.shape and grad.shape == weight.shape
    assert np.array_equal(u, expected_u) and np.array_equal(grad, expected_grad)


@settings(**SETTINGS)
@given(case=winograd_cases(), need_input_grad=st.booleans(), need_weight_grad=st.booleans())
def test_compiled_winograd_equals_reference_winograd(case, need_input_grad, need_weight_grad):
    K = compiled_kernels()
    x, weight, bias, grad_y = case_arrays(case)
    p, m = case["padding"], case["m"]
    assert_within(K.winograd_conv2d_forward(x, weight, bias, p, m), RW.conv2d_forward(x, weight, bias, p, m), case, "y")
    got = K.winograd_conv2d_backward(x, weight, grad_y, p, need_input_grad, need_weight_grad, m)
    expected = RW.conv2d_backward(x, weight, grad_y, p, need_input_grad, need_weight_grad, m)
    for what, g, e in zip(("grad_x", "grad_weight"), got, expected):
        assert (g is None) == (e is None), what
        if e is not None:
            assert_within(g, e, case, what)


@pytest.mark.parametrize("m", RW.TILE_SIZES)
def test_compiled_winograd_on_many_blocks_of_tiles(m):
    """Batches whose tiles span several blocks (and a last, shorter one), channels above the block budget."""
    K = compiled_kernels()
    rng = np.random.default_rng(m)
    x = rng.standard_normal((20, 24, 13, 11)).astype(np.float32)
    weight = rng.standard_normal((40, 24, 3, 3)).astype(np.float32)
    grad_y = rng.standard_normal((20, 40, 13, 11)).astype(np.float32)
    tiles = 20 * -(-13 // m) * -(-11 // m)
    assert tiles > K.winograd_block(m, 24, 40) and tiles % K.winograd_block(m, 24, 40)  # a last, shorter block
    case = dict(dtype=np.float32, m=m)
    assert_within(K.winograd_conv2d_forward(x, weight, None, (1, 1), m), RW.conv2d_forward(x, weight, None, (1, 1), m),
                  case, "y")
    for what, g, e in zip(("grad_x", "grad_weight"), K.winograd_conv2d_backward(x, weight, grad_y, (1, 1), m=m),
                          RW.conv2d_backward(x, weight, grad_y, (1, 1), m=m)):
        assert_within(g, e, case, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", RW.TILE_SIZES)
def test_thread_counts_give_bit_identical_results(m, dtype):
    K = compiled_kernels()
    rng = np.random.default_rng(m)
    x = rng.standard_normal((64, 16, 18, 18)).astype(dtype)
    weight = rng.standard_normal((16, 16, 3, 3)).astype(dtype)
    grad_y = rng.standard_normal((64, 16, 18, 18)).astype(dtype)
    assert 64 * (-(-18 // m)) ** 2 > 2 * K.winograd_block(m, 16, 16)  # several blocks: 2 threads split them
    results = []
    for threads in (1, 2):
        with num_threads(threads), nn.backends.kernel_blas():
            results.append((K.winograd_conv2d_forward(x, weight, None, (1, 1), m),
                            *K.winograd_conv2d_backward(x, weight, grad_y, (1, 1), m=m)))
    for what, one, two in zip(("y", "grad_x", "grad_weight"), *results):
        assert np.array_equal(one, two), f"{what} differs between 1 and 2 threads (m={m}, {np.dtype(dtype)})"


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape, padding", [((9, 32, 26, 26), (0, 0)), ((4, 16, 58, 58), (1, 1)), ((6, 16, 11, 13), (1, 0))])
def test_an_image_comes_out_the_same_whatever_batch_it_is_in(m, shape, padding):
    """Blocks of tiles never span two images, so an image's output and input gradient do not depend on
    the batch size or on its place in the batch (cached features equal what a training batch computes)."""
    K = compiled_kernels()
    rng = np.random.default_rng(m)
    x = rng.standard_normal(shape, dtype=np.float32)
    weight = rng.standard_normal((8,) + shape[1:2] + (3, 3), dtype=np.float32)
    with nn.backends.kernel_blas():
        y = K.winograd_conv2d_forward(x, weight, None, padding, m)
        grad_y = rng.standard_normal(y.shape, dtype=np.float32)
        grad_x, _ = K.winograd_conv2d_backward(x, weight, grad_y, padding, m=m)
        for lo, hi in [(0, 1), (3, 4), (1, 4), (2, shape[0])]:
            assert np.array_equal(K.winograd_conv2d_forward(x[lo:hi], weight, None, padding, m), y[lo:hi]), (lo, hi)
            part, _ = K.winograd_conv2d_backward(x[lo:hi], weight, grad_y[lo:hi], padding, m=m)
            assert np.array_equal(part, grad_x[lo:hi]), (lo, hi)


# ----------------------------------------------------------------------------- gradient checks

@pytest.fixture
def one_kernel_thread():
    with num_threads(1):
        yield


# (in_channels, out_channels, padding, bias, H, W)
GRADCHECK_CASES = [
    pytest.param(1, 1, 0, True, 5, 5, id="1to1_p0"),
    pytest.param(2, 3, 1, True, 5, 6, id="2to3_p1"),
    pytest.param(3, 2, 2, False, 4, 7, id="3to2_p2_nobias"),
    pytest.param(2, 2, (0, 1), True, 7, 4, id="2to2_p0x1"),
    pytest.param(2, 1, 3, True, 3, 3, id="2to1_p3"),
]


@pytest.mark.parametrize("algorithm", ["winograd", "winograd_2x2"])
@pytest.mark.parametrize("cin, cout, padding, bias, h, w", GRADCHECK_CASES)
def test_gradcheck_conv2d_winograd(backend, one_kernel_thread, record_errors, request, algorithm, cin, cout, padding,
                                   bias, h, w):
    rng = np.random.default_rng(3)
    layer = nn.Conv2d(cin, cout, 3, padding=padding, bias=bias, dtype=np.float64, generator=rng, algorithm=algorithm)
    if bias:
        layer.bias.data[:] = rng.standard_normal(cout)
    errors = check_module(layer, rng.standard_normal((2, cin, h, w)))
    record_errors(request.node.name, errors)
    assert set(errors) == {"input"} | {name for name, _ in layer.named_parameters()}
    assert all(e <= GRADCHECK_TOL for e in errors.values()), errors


# ----------------------------------------------------------------------------- choosing the algorithm

@pytest.mark.parametrize("kernel, stride, channels, batch, expected", [
    (3, 1, 32, 64, "winograd"),  # the seed's conv2 in training
    (3, 1, 64, 16, "winograd"),
    (3, 1, 32, 1, "direct"),  # one image: 36 tiles
    (3, 1, 1, 64, "direct"),  # the seed's conv1: one input channel
    (3, 2, 32, 64, "direct"),
    (5, 1, 32, 64, "direct"),
    (1, 1, 256, 8, "direct"),
    ((3, 1), 1, 32, 64, "direct"),
    (7, 2, 3, 1, "direct"),
])
def test_auto_picks_winograd_only_for_3x3_stride_1(kernel, stride, channels, batch, expected):
    layer = nn.Conv2d(channels, 8, kernel, stride=stride)
    assert layer.algorithm_for((batch, channels, 26, 26)) == expected
    assert nn.Conv2d(channels, 8, kernel, stride=stride, algorithm="direct").algorithm_for((batch, channels, 26, 26)) \
        == "direct"


def test_set_conv_algorithm_changes_what_auto_stands_for():
    conv2, conv5 = nn.Conv2d(32, 8, 3), nn.Conv2d(32, 8, 5)
    own = nn.Conv2d(32, 8, 3, algorithm="winograd_2x2")
    shape = (64, 32, 26, 26)
    assert nn.get_conv_algorithm() == "auto"
    with nn.use_conv_algorithm("direct"):
        assert (conv2.algorithm_for(shape), own.algorithm_for(shape)) == ("direct", "winograd_2x2")
    with nn.use_conv_algorithm("winograd_2x2"):
        assert (conv2.algorithm_for(shape), conv5.algorithm_for(shape)) == ("winograd_2x2", "direct")
    assert nn.get_conv_algorithm() == "auto"
    with pytest.raises(ValueError, match="set_conv_algorithm: algorithm must be one of"):
        nn.set_conv_algorithm("fft")


def test_backward_runs_the_forwards_algorithm(backend):
    """A backward after the setting changed still differentiates what the forward computed."""
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(16, 4, 3, dtype=np.float64, generator=rng)
    x = rng.standard_normal((16, 16, 10, 10))
    with nn.use_conv_algorithm("winograd"):
        y = layer(x)
    grad_x = layer.backward(np.ones_like(y))
    expected, _ = RW.conv2d_backward(x, layer.weight.data, np.ones_like(y), (0, 0), m=4)
    assert relative_error(grad_x, expected) <= FLOAT64_BOUND


@pytest.mark.parametrize("algorithm", ["winograd", "winograd_2x2"])
@pytest.mark.parametrize("kernel, stride", [(5, 1), (3, 2), ((3, 1), 1), (1, 1)])
def test_winograd_on_an_unsupported_shape_is_a_clear_error(algorithm, kernel, stride):
    with pytest.raises(ValueError, match=re.escape(f"Conv2d(4, 8, kernel_size={kernel}): algorithm '{algorithm}' computes "
                                                   "3×3 convolutions with stride 1 only")):
        nn.Conv2d(4, 8, kernel, stride=stride, algorithm=algorithm)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, w = np.zeros((1, 4, 9, 9), np.float32), np.zeros((8, 4, kh, kw), np.float32)
    with pytest.raises(ValueError, match=f"my_conv: algorithm '{algorithm}' computes"):
        ops.conv2d(x, w, None, stride, 0, where="my_conv", algorithm=algorithm)
    with pytest.raises(ValueError, match=f"my_conv: algorithm '{algorithm}' computes"):
        ops.conv2d_backward(x, w, np.zeros_like(ops.conv2d(x, w, None, stride, 0)), stride, 0, where="my_conv",
                            algorithm=algorithm)


def test_unknown_algorithm_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Conv2d\(1, 2, kernel_size=3\): algorithm must be one of .* got 'fast'"):
        nn.Conv2d(1, 2, 3, algorithm="fast")
    assert conv_algorithm.ALGORITHMS == ("auto", "direct", "winograd", "winograd_2x2")


def test_repr_shows_a_chosen_algorithm():
    assert repr(nn.Conv2d(1, 2, 3)) == "Conv2d(1, 2, kernel_size=(3, 3))"
    assert repr(nn.Conv2d(1, 2, 3, algorithm="winograd")) == "Conv2d(1, 2, kernel_size=(3, 3), algorithm='winograd')"

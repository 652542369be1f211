"""The direct convolution's two shortcuts (issue 13), against the NumPy reference and against themselves:

* a pointwise convolution (1×1 kernel, stride 1, no padding) skips im2col and col2im: its im2col is
  the image itself, so ``y[n] = W x[n]``, ``∂L/∂x[n] = Wᵀ ∂L/∂y[n]``, ``∂L/∂W = Σ_n ∂L/∂y[n] x[n]ᵀ``;
* an image's forward GEMM is cut into blocks of output rows (``_kernels.forward_row_blocks``), and its
  backward into blocks of input channels (``_kernels.backward_channel_blocks``), fixed by the layer's
  shapes, so one image can use every thread and each block's im2col stays in cache.

For both: equal to the reference (hypothesis, over shapes, strides, paddings, batch 1 and N < threads),
bit-identical for 1 and 2 threads, an image's output independent of the batch around it, and a
float64 gradient check through a layer (``tests/test_kernels_equal.py`` covers the general case).
The ``small_blocks`` fixture shrinks the blocks so that small (fast) shapes are cut into many uneven ones.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnscratch as nn
from nnscratch import reference as R
from nnscratch.gradient_check import gradcheck

from strategies import FLOAT_DTYPES, KERNEL_SETTINGS, assert_close, compiled_kernels, conv_arrays, num_threads


@pytest.fixture
def small_blocks(monkeypatch):
    """Cut every image with more than a few multiply-adds into blocks of 8 pixels, a backward over fewer than 4 images
    into blocks of channels."""
    K = compiled_kernels()
    monkeypatch.setattr(K, "SPLIT_MIN_WORK", 100)
    monkeypatch.setattr(K, "FORWARD_BLOCK_PIXELS", 8)
    monkeypatch.setattr(K, "BACKWARD_MIN_PIECES", 4)
    return K


@st.composite
def direct_cases(draw):
    """Pointwise convolutions, and convolutions large enough for several row blocks per image."""
    pointwise = draw(st.booleans())
    if pointwise:
        kernel, stride, padding = (1, 1), (1, 1), (0, 0)
        h, w = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    else:
        kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        h, w = draw(st.integers(kernel[0], 40)), draw(st.integers(kernel[1], 40))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 24)), f=draw(st.integers(1, 24)), h=h, w=w,
                kernel=kernel, stride=stride, padding=padding, bias=draw(st.booleans()), dtype=draw(FLOAT_DTYPES),
                seed=draw(st.integers(0, 2**32 - 1)))


# small_blocks only sets constants, the same for every example: sharing it between examples is safe
@settings(max_examples=80, **dict(KERNEL_SETTINGS, suppress_health_check=[*KERNEL_SETTINGS["suppress_health_check"],
                                                                          HealthCheck.function_scoped_fixture]))
@given(case=direct_cases(), need_input_grad=st.booleans())
def test_direct_paths_equal_the_reference(small_blocks, case, need_input_grad):
    K = small_blocks
    rng, x, weight, bias = conv_arrays(case)
    y = K.conv2d_forward(x, weight, bias, case["stride"], case["padding"])
    assert_close(y, R.conv2d_forward(x, weight, bias, case["stride"], case["padding"]), f"forward {case}")
    grad_y = rng.standard_normal(y.shape).astype(case["dtype"])
    args = (x, weight, grad_y, case["stride"], case["padding"], need_input_grad, True)
    (got_x, got_w), (exp_x, exp_w) = K.conv2d_backward(*args), R.conv2d_backward(*args)
    assert_close(got_w, exp_w, f"grad_weight {case}")
    if need_input_grad:
        assert_close(got_x, exp_x, f"grad_x {case}")
    else:
        assert got_x is None


def test_blocks():
    K = compiled_kernels()
    # the seed's conv2 on one image fills two threads, forward and backward
    assert K.forward_row_blocks(64, 32 * 9, 24, 24) >= 2 and K.backward_channel_blocks(1, 64, 32, 32 * 9, 24 * 24) >= 2
    assert K.backward_channel_blocks(64, 64, 32, 32 * 9, 24 * 24) == 1  # a batch: its images fill the threads
    assert K.forward_row_blocks(32, 9, 26, 26) == K.backward_channel_blocks(1, 32, 1, 9, 26 * 26) == 1  # conv1: too little
    assert K.forward_row_blocks(64, 3 * 49, 112, 112) <= 112  # never more blocks than rows
    assert K.forward_row_blocks(1 << 10, 1 << 10, 1, 1 << 12) == 1  # one output row: one block
    assert K.backward_channel_blocks(1, 64, 3, 3 * 49, 112 * 112) <= 3  # never more blocks than channels


# (N, C, F, H, W, kernel, stride, padding): pointwise, and row-blocked with N below, at and above 2 threads
SHAPES = [
    pytest.param(1, 16, 24, 14, 14, (1, 1), (1, 1), (0, 0), id="pointwise_n1"),
    pytest.param(5, 16, 24, 9, 11, (1, 1), (1, 1), (0, 0), id="pointwise_n5"),
    pytest.param(1, 6, 16, 26, 26, (3, 3), (1, 1), (0, 0), id="blocks_n1"),
    pytest.param(2, 3, 8, 47, 45, (7, 7), (2, 2), (3, 3), id="blocks_n2_stride2"),
    pytest.param(3, 4, 8, 33, 30, (3, 2), (1, 2), (1, 0), id="blocks_n3"),
]


def _run(K, x, weight, bias, grad_y, stride, padding):
    y = K.conv2d_forward(x, weight, bias, stride, padding)
    return (y,) + K.conv2d_backward(x, weight, grad_y, stride, padding)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, c, f, h, w, kernel, stride, padding", SHAPES)
def test_threads_and_batch_do_not_change_the_bits(small_blocks, dtype, n, c, f, h, w, kernel, stride, padding):
    K = small_blocks
    rng = np.random.default_rng(n * 100 + h)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((f, c) + kernel).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    y = K.conv2d_forward(x, weight, bias, stride, padding)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    assert n * f * c * kernel[0] * kernel[1] * y.shape[2] * y.shape[3] > K.PARALLEL_MIN_WORK  # 2 threads do split it
    runs = {}
    for threads in (1, 2):
        with num_threads(threads):
            runs[threads] = _run(K, x, weight, bias, grad_y, stride, padding)
            # every image alone: the same forward and input gradient as in the batch
            for i in range(n):
                alone = _run(K, x[i:i + 1], weight, bias, grad_y[i:i + 1], stride, padding)
                assert np.array_equal(alone[0][0], runs[threads][0][i]), f"image {i}'s output depends on the batch"
                assert np.array_equal(alone[1][0], runs[threads][1][i]), f"image {i}'s grad_x depends on the batch"
    for what, one, two in zip(("y", "grad_x", "grad_weight"), runs[1], runs[2]):
        assert np.array_equal(one, two), f"{what} differs between 1 and 2 threads"
    expected = (R.conv2d_forward(x, weight, bias, stride, padding),) + R.conv2d_backward(x, weight, grad_y, stride, padding)
    for what, got, exp in zip(("y", "grad_x", "grad_weight"), runs[1], expected):
        assert_close(got, exp, what)


@pytest.mark.parametrize("cin, cout, kernel, h", [pytest.param(3, 4, 1, 6, id="pointwise"),
                                                  pytest.param(3, 8, 3, 9, id="blocks")])
def test_gradcheck_float64(small_blocks, cin, cout, kernel, h):
    """One thread (finite differences run thousands of tiny calls; the blocks do not depend on it)."""
    rng = np.random.default_rng(5)
    layer = nn.Conv2d(cin, cout, kernel, dtype=np.float64, generator=rng)
    layer.bias.data[:] = rng.standard_normal(cout)
    x = rng.standard_normal((1, cin, h, h))
    assert small_blocks.forward_row_blocks(cout, cin * kernel**2, h - kernel + 1, h - kernel + 1) >= 2
    assert small_blocks.backward_channel_blocks(1, cout, cin, cin * kernel**2, (h - kernel + 1) ** 2) >= 2
    with num_threads(1), nn.use_backend("cython"):
        errors = gradcheck(layer, x)
    assert set(errors) == {"input", "weight", "bias"}


# ----------------------------------------------------------------------------- dense: the depth cut

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, fin, fout", [(64, 2305, 32), (3, 1000, 40), (1, 70000, 1)])
def test_linear_depth_cut(dtype, n, fin, fout):
    """``y = x Wᵀ`` with in_features the longest side (the seed Net's fc1, 64 × 9216 by 9216 × 128) is cut
    along the sum, ``Σ_i x[:, K_i] W[:, K_i]ᵀ``, partial products added in block order: equal to the
    reference, bit-identical for 1 and 2 threads (``test_kernels_equal`` checks the other two sides)."""
    K = compiled_kernels()
    side, blocks = K.matmul_blocks(n, fout, fin)
    assert side == "depth" and len(blocks) == K.MATMUL_BLOCKS
    rng = np.random.default_rng(fin)
    x = rng.standard_normal((n, fin)).astype(dtype)
    weight = rng.standard_normal((fout, fin)).astype(dtype)
    bias = rng.standard_normal(fout).astype(dtype)
    runs = []
    for threads in (1, 2):
        with num_threads(threads):
            runs.append(K.linear_forward(x, weight, bias))
    assert np.array_equal(runs[0], runs[1]), "linear forward differs between 1 and 2 threads"
    assert_close(runs[0], R.linear_forward(x, weight, bias), "linear forward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blocks, size", [(1, 5), (16, 65536), (3, 100_003), (16, 0)])
def test_weight_gradient_blocks_add_as_numpy_does(dtype, blocks, size):
    """Partial sums in blocks (weight gradients, matrix products cut along their depth) are added in block
    order, in chunks across threads: the bits of NumPy's ``parts.sum(axis=0)`` (which those kernels used
    before), with 1 and 2 threads."""
    K = compiled_kernels()
    parts = np.random.default_rng(size).standard_normal((blocks, size)).astype(dtype) * 1e3
    expected = parts.sum(axis=0)
    for threads in (1, 2):
        with num_threads(threads):
            got = K.add_blocks(parts)
        assert got.dtype == dtype and np.array_equal(got, expected), threads

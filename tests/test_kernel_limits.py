"""Sizes beyond a C int (2³¹ − 1) in the compiled kernels: 64-bit index arithmetic, and a clear error
up front where BLAS (which takes C ints) cannot take a size.

Nothing big is allocated: the window-area cases pool a 1×1 input padded into a huge window (the
loops visit only the real pixels), the BLAS checks are triggered either by a padded geometry that
fails before any output exists, or with ``ops.BLAS_MAX_SIZE`` monkeypatched small, and the block
cut of a matrix product is computed for sizes too large to allocate.
"""
import numpy as np
import pytest

import nnscratch
from nnscratch import ops
from nnscratch import reference as R


def kernels():
    kernels = nnscratch.backends._kernels
    if kernels is None:
        pytest.fail("nnscratch._kernels is not built", pytrace=False)
    return kernels


# ----------------------------------------------------------------------------- average pooling's window area

@pytest.mark.parametrize("kernel, padding", [(46341, 23170), (65536, 32768)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_avgpool_window_area_beyond_a_c_int(kernel, padding, dtype):
    """kh·kw = 46341² just passes 2³¹ (an int area came out negative) and 65536² = 2³² (it came out 0: inf)."""
    kernels()
    pool = nnscratch.AvgPool2d(kernel, padding=padding)
    x = np.full((1, 1, 1, 1), 3.0, dtype)
    expected = (np.float64(3.0) / (kernel * kernel)).astype(dtype)
    with nnscratch.use_backend("cython"):
        y = pool(x)
        grad_x = pool.backward(np.ones_like(y))
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] > 0, f"average of a positive window: {y.ravel()}"
    np.testing.assert_allclose(y.ravel(), [expected], rtol=1e-6 if dtype == np.float32 else 1e-15)
    share = dtype(1.0) / dtype(kernel * kernel)  # the reference's grad_y / (kh * kw)
    assert grad_x.ravel()[0] == share, f"backward gives {grad_x.ravel()[0]!r}, expected {share!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_window_area_past_float32_precision_rounds_as_the_reference(dtype):
    """4097² > 2²⁴ is not a float32: the compiled forward divides as NumPy's mean does (in double), so
    both backends give the same bits (the reference pads the input to 4097², 64 MiB in float32). The
    backward divides by the area rounded to the dtype, the reference's ``grad_y / (kh * kw)`` (whose
    loop over the 4097² window offsets is too slow to run here)."""
    kernels()
    x = np.full((1, 1, 1, 1), 3.0, dtype)
    with nnscratch.use_backend("numpy"):
        expected = ops.avg_pool2d(x, 4097, padding=2048)
    with nnscratch.use_backend("cython"):
        y = ops.avg_pool2d(x, 4097, padding=2048)
        grad_x = ops.avg_pool2d_backward(np.full_like(y, 3.0), x.shape, 4097, padding=2048)
    assert y.dtype == expected.dtype and y.tobytes() == expected.tobytes(), \
        f"forward: compiled {y.ravel()!r} vs reference {expected.ravel()!r}"
    share = np.full((1, 1, 1, 1), 3.0, dtype) / (4097 * 4097)
    assert grad_x.tobytes() == share.tobytes(), f"backward: compiled {grad_x.ravel()!r} vs {share.ravel()!r}"


# ----------------------------------------------------------------------------- matrix product blocks

@pytest.mark.parametrize("m, n, k, side, length", [
    (2**31 + 5, 3, 2, "rows", 2**31 + 5),      # a dense layer fed 2^31 + 5 rows
    (2**29, 7, 1, "rows", 2**29),              # 4·2^29 overflowed an int block bound
    (3, 2**33, 2, "columns", 2**33),
])
def test_matmul_blocks_cover_the_product_in_64_bit(m, n, k, side, length):
    by, blocks = kernels().matmul_blocks(m, n, k)
    assert by == side
    assert blocks[0][0] == 0 and blocks[-1][1] == length, blocks
    assert all(lo < hi for lo, hi in blocks), blocks
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:])), f"blocks leave gaps or overlap: {blocks}"


def test_the_kernels_refuse_a_size_blas_cannot_take():
    K = kernels()
    K._check_blas_sizes(1, 2**31 - 1)  # the largest C int is fine
    with pytest.raises(OverflowError, match="2147483648 exceeds what BLAS takes"):
        K._check_blas_sizes(3, 2**31)


# ----------------------------------------------------------------------------- up-front checks in ops

def test_a_convolution_plane_beyond_a_c_int_fails_before_allocating():
    """1×1 input padded by 23170: a 46341×46341 output plane (2³¹ + 4633 pixels, 8.6 GB in float32);
    the check fails at once, naming the layer, the size and the limit."""
    kernels()
    conv = nnscratch.Conv2d(1, 1, 1, padding=23170)
    with nnscratch.use_backend("cython"):
        with pytest.raises(ValueError) as caught:
            conv(np.ones((1, 1, 1, 1), np.float32))
    message = str(caught.value)
    assert message.startswith("Conv2d(1, 1, kernel_size=(1, 1)"), message
    assert f"OH*OW is {46341 * 46341}" in message and str(2**31 - 1) in message, message


@pytest.fixture
def small_blas_limit(monkeypatch):
    kernels()
    monkeypatch.setattr(ops, "BLAS_MAX_SIZE", 10)
    with nnscratch.use_backend("cython"):
        yield


@pytest.mark.parametrize("layer, shape, size_name, size", [
    (lambda: nnscratch.Dense(3, 2), (11, 3), "the batch size (rows of the matrix product)", 11),
    (lambda: nnscratch.Dense(12, 2), (1, 12), "in_features", 12),
    (lambda: nnscratch.Dense(3, 13), (1, 3), "out_features", 13),
    (lambda: nnscratch.Conv2d(1, 2, 1), (1, 1, 4, 3), "the output plane OH*OW", 12),
    (lambda: nnscratch.Conv2d(2, 2, (3, 2)), (1, 2, 3, 2), "C*KH*KW", 12),
    (lambda: nnscratch.Conv2d(1, 11, 1), (1, 1, 1, 1), "the number of filters", 11),
], ids=["dense-rows", "dense-in", "dense-out", "conv-plane", "conv-window", "conv-filters"])
def test_sizes_over_the_blas_limit_are_named(small_blas_limit, layer, shape, size_name, size):
    module = layer()
    with pytest.raises(ValueError) as caught:
        module(np.ones(shape, np.float32))
    message = str(caught.value)
    assert message.startswith(type(module).__name__ + "("), message
    assert f"{size_name} is {size}" in message and "(10, the largest C int)" in message, message
    assert "nnscratch.set_backend('numpy')" in message, message


def test_sizes_at_the_limit_pass_and_the_reference_has_no_limit(small_blas_limit):
    nnscratch.manual_seed(0)
    dense = nnscratch.Dense(3, 2)
    x = np.random.default_rng(0).standard_normal((11, 3)).astype(np.float32)
    y_limit = dense(x[:10])  # 10 rows: exactly at the limit
    dense.backward(np.ones_like(y_limit))
    with nnscratch.use_backend("numpy"):  # 11 rows: the reference has no C int to overflow
        y = dense(x)
    np.testing.assert_allclose(y[:10], y_limit, rtol=1e-6)
    np.testing.assert_allclose(y, R.linear_forward(x, dense.weight.data, dense.bias.data), rtol=1e-6)

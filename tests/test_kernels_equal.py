"""The compiled kernels (``nnscratch._kernels``) equal the NumPy reference (``nnscratch.backends.reference``).

Property-based (hypothesis, derandomized so every run draws the same examples): random
batch, channel, filter and spatial sizes, non-square kernels, asymmetric strides and
paddings, float64 and float32.

* float64: ``max|cython - reference| <= 1e-12 * max(1, max|reference|)``;
* float32: the same with ``1e-5``;
* pooling (``tests/test_kernels_equal_pooling.py``): max pooling's values AND argmax indices exactly
  equal, also with ties (small integers) and NaNs.

The backend modules are called directly with validated arguments (C-contiguous arrays of
one float dtype, ``(int, int)`` stride and padding, kernel within the padded input, pooling
padding <= kernel // 2); non-contiguous and mixed-dtype inputs go through :mod:`nnscratch.ops`.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnscratch
from nnscratch import ops
from nnscratch import reference as R

from strategies import (FLOAT_DTYPES, KERNEL_SETTINGS, LAYOUTS, assert_close, case_output_hw, compiled_kernels,
                        conv_arrays, noncontiguous, num_threads, output_hw)


# ----------------------------------------------------------------------------- strategies

@st.composite
def conv_cases(draw, max_n=3, max_hw=9):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return dict(
        n=draw(st.integers(1, max_n)), c=draw(st.integers(1, 4)), f=draw(st.integers(1, 4)),
        h=draw(st.integers(max(1, kh - 2 * ph), max_hw)), w=draw(st.integers(max(1, kw - 2 * pw), max_hw)),
        kernel=(kh, kw), stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
        bias=draw(st.booleans()), dtype=draw(FLOAT_DTYPES), seed=draw(st.integers(0, 2**32 - 1)),
    )


# ----------------------------------------------------------------------------- convolution

@settings(max_examples=100, **KERNEL_SETTINGS)
@given(case=conv_cases())
def test_conv2d_forward(case):
    K = compiled_kernels()
    _, x, weight, bias = conv_arrays(case)
    args = (x, weight, bias, case["stride"], case["padding"])
    expected = R.conv2d_forward(*args)
    assert expected.shape == (case["n"], case["f"]) + case_output_hw(case)
    assert_close(K.conv2d_forward(*args), expected, f"conv2d_forward {case}")


@settings(max_examples=100, **KERNEL_SETTINGS)
@given(case=conv_cases(), need_input_grad=st.booleans(), need_weight_grad=st.booleans())
def test_conv2d_backward(case, need_input_grad, need_weight_grad):
    K = compiled_kernels()
    rng, x, weight, _ = conv_arrays(case)
    grad_y = rng.standard_normal((case["n"], case["f"]) + case_output_hw(case)).astype(case["dtype"])
    args = (x, weight, grad_y, case["stride"], case["padding"], need_input_grad, need_weight_grad)
    exp_x, exp_w = R.conv2d_backward(*args)
    got_x, got_w = K.conv2d_backward(*args)
    for got, exp, needed, what in ((got_x, exp_x, need_input_grad, "grad_x"), (got_w, exp_w, need_weight_grad, "grad_weight")):
        if needed:
            assert_close(got, exp, f"conv2d_backward {what} {case}")
        else:
            assert got is None and exp is None, f"{what} was not asked for"
    got_b, exp_b = K.conv2d_bias_backward(grad_y), R.conv2d_bias_backward(grad_y)
    assert got_b.dtype == exp_b.dtype == grad_y.dtype and got_b.shape == (case["f"],)
    assert_close(got_b, exp_b, f"conv2d_bias_backward {case}")
    if need_input_grad:
        assert got_x.shape == x.shape
    if need_weight_grad:
        assert got_w.shape == weight.shape


# ----------------------------------------------------------------------------- through nnscratch.ops

@pytest.mark.parametrize("name", ["numpy", "cython"])
@settings(max_examples=30, **KERNEL_SETTINGS)
@given(case=conv_cases(max_n=2, max_hw=7), layout=LAYOUTS)
def test_ops_conv2d_noncontiguous(name, case, layout):
    if name == "cython":
        compiled_kernels()
    rng, x, weight, bias = conv_arrays(case)
    stride, padding = case["stride"], case["padding"]
    grad_y = rng.standard_normal((case["n"], case["f"]) + case_output_hw(case)).astype(case["dtype"])
    nx, nw, ng = (noncontiguous(a, rng, layout) for a in (x, weight, grad_y))
    nb = None if bias is None else noncontiguous(bias, rng, "strided")
    if layout == "strided" and x.shape[-1] > 1:
        assert not nx.flags.c_contiguous
    with nnscratch.use_backend(name):
        y = ops.conv2d(nx, nw, nb, stride, padding)
        gx, gw = ops.conv2d_backward(nx, nw, ng, stride, padding)
    assert_close(y, R.conv2d_forward(x, weight, bias, stride, padding), f"ops.conv2d {layout} {case}")
    ex, ew = R.conv2d_backward(x, weight, grad_y, stride, padding)
    assert_close(gx, ex, f"ops.conv2d_backward grad_x {layout}")
    assert_close(gw, ew, f"ops.conv2d_backward grad_weight {layout}")


@pytest.mark.parametrize("name", ["numpy", "cython"])
def test_ops_mixed_dtypes_follow_the_input(name):
    """A float64 weight/bias with a float32 input is cast to float32 (the input's dtype)."""
    if name == "cython":
        compiled_kernels()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w, b = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    with nnscratch.use_backend(name):
        y = ops.conv2d(x, w, b, (2, 1), (1, 0))
        gx, gw = ops.conv2d_backward(x, w, rng.standard_normal(y.shape), (2, 1), (1, 0))
    assert y.dtype == gx.dtype == gw.dtype == np.float32
    w32, b32 = w.astype(np.float32), b.astype(np.float32)
    assert_close(y, R.conv2d_forward(x, w32, b32, (2, 1), (1, 0)))


# ----------------------------------------------------------------------------- threads

def _run_all(K, x, weight, bias, grad_y, pool_grad, stride, padding, kernel):
    out = {}
    out["conv_y"] = K.conv2d_forward(x, weight, bias, stride, padding)
    out["conv_gx"], out["conv_gw"] = K.conv2d_backward(x, weight, grad_y, stride, padding, True, True)
    out["max_y"], out["max_i"] = K.maxpool2d_forward(x, kernel, stride, padding)
    out["max_gx"] = K.maxpool2d_backward(pool_grad, out["max_i"], x.shape)
    out["avg_y"] = K.avgpool2d_forward(x, kernel, stride, padding)
    out["avg_gx"] = K.avgpool2d_backward(pool_grad, x.shape, kernel, stride, padding)
    return out


# The project requires bit-identical results for 1 and 2 threads. At the time of writing this
# The compiled kernels run one thread for jobs below PARALLEL_MIN_WORK multiply-adds; n=32 is
# above it for every kernel here (checked below), so 2 threads really split the work.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 3, 8, 32])
def test_thread_counts_give_bit_identical_results(dtype, n):
    K = compiled_kernels()
    rng = np.random.default_rng(n)
    kernel, stride, padding = (3, 3), (2, 1), (1, 1)
    x = rng.integers(-3, 4, (n, 8, 11, 10)).astype(dtype) + rng.standard_normal((n, 8, 11, 10)).astype(dtype)
    weight = rng.standard_normal((5, 8) + kernel).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    oh, ow = output_hw(11, 10, kernel, stride, padding)
    if n == 32:
        assert min(n * 5 * 8 * 9 * oh * ow, n * 8 * oh * ow * 9) > K.PARALLEL_MIN_WORK
    grad_y = rng.standard_normal((n, 5, oh, ow)).astype(dtype)
    pool_grad = rng.standard_normal((n, 8, oh, ow)).astype(dtype)
    results = {}
    for threads in (1, 2, 1, 2):
        with num_threads(threads):
            assert nnscratch.get_num_threads() == threads and K.get_num_threads() == threads
            results.setdefault(threads, []).append(_run_all(K, x, weight, bias, grad_y, pool_grad, stride, padding, kernel))
    # run to run, same thread count
    for threads, runs in results.items():
        for key, value in runs[0].items():
            assert np.array_equal(value, runs[1][key]), f"{key} differs between two runs with {threads} thread(s)"
    # 1 thread versus 2 threads
    one, two = results[1][0], results[2][0]
    differ = {key: float(np.abs(one[key].astype(np.float64) - two[key]).max())
              for key in one if one[key].dtype != two[key].dtype or not np.array_equal(one[key], two[key])}
    assert not differ, f"results differ between 1 and 2 threads (max |diff|): {differ}"
    runs = results[1]
    # and they are right
    ref = _run_all(R, x, weight, bias, grad_y, pool_grad, stride, padding, kernel)
    for key, value in runs[0].items():
        if key == "max_i":
            assert np.array_equal(value, ref[key])
        else:
            assert_close(value, ref[key], key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(64, 64, 24, 24), (3, 40, 7, 5)])
def test_conv_bias_gradient_bit_identical_across_threads(dtype, shape):
    """The compiled bias gradient (one filter per piece of work, sixteen running sums per plane)
    gives the same bits with one and two threads, and the float64 sum to float32 rounding."""
    K = compiled_kernels()
    grad_y = np.random.default_rng(shape[0]).standard_normal(shape).astype(dtype)
    if shape[0] == 64:
        assert grad_y.size > K.PARALLEL_MIN_WORK
    results = []
    for threads in (1, 2):
        with num_threads(threads):
            results.append(K.conv2d_bias_backward(grad_y))
    assert np.array_equal(results[0], results[1])
    exact = grad_y.astype(np.float64).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(results[0], exact, rtol=0, atol=1e-12 if dtype == np.float64 else 1e-6 * grad_y.size ** 0.5)


# ----------------------------------------------------------------------------- dense (linear)

# Big enough for two threads (above PARALLEL_MIN_WORK), and shaped so that each of the three
# products is cut by rows in one case and by columns in another (the longer side of the result
# is split), with sizes that do not divide evenly between the threads.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, fin, fout", [(67, 301, 21), (9, 203, 97), (130, 17, 45)])
def test_linear_threads_split_rows_or_columns_bit_identically(dtype, n, fin, fout):
    K = compiled_kernels()
    assert n * fin * fout > K.PARALLEL_MIN_WORK
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, fin)).astype(dtype)
    weight = rng.standard_normal((fout, fin)).astype(dtype)
    bias = rng.standard_normal(fout).astype(dtype)
    grad_y = rng.standard_normal((n, fout)).astype(dtype)
    results = {}
    for threads in (1, 2):
        with num_threads(threads):
            results[threads] = (K.linear_forward(x, weight, bias),) + K.linear_backward(x, weight, grad_y)
    expected = (R.linear_forward(x, weight, bias),) + R.linear_backward(x, weight, grad_y)
    for what, one, two, ref in zip(("y", "grad_x", "grad_weight"), results[1], results[2], expected):
        assert np.array_equal(one, two), f"linear {what} differs between 1 and 2 threads"
        assert_close(two, ref, f"linear {what}")


@settings(max_examples=50, **KERNEL_SETTINGS)
@given(n=st.integers(1, 6), fin=st.integers(1, 9), fout=st.integers(1, 7), bias=st.booleans(), dtype=FLOAT_DTYPES,
       need_input_grad=st.booleans(), need_weight_grad=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_linear_forward_backward(n, fin, fout, bias, dtype, need_input_grad, need_weight_grad, seed):
    K = compiled_kernels()
    if not hasattr(R, "linear_forward"):
        pytest.skip("no linear kernels in this version")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fin)).astype(dtype)
    weight = rng.standard_normal((fout, fin)).astype(dtype)
    b = rng.standard_normal(fout).astype(dtype) if bias else None
    grad_y = rng.standard_normal((n, fout)).astype(dtype)
    assert_close(K.linear_forward(x, weight, b), R.linear_forward(x, weight, b), "linear_forward")
    got = K.linear_backward(x, weight, grad_y, need_input_grad, need_weight_grad)
    exp = R.linear_backward(x, weight, grad_y, need_input_grad, need_weight_grad)
    for g, e, needed, what in zip(got, exp, (need_input_grad, need_weight_grad), ("grad_x", "grad_weight")):
        if needed:
            assert_close(g, e, f"linear_backward {what}")
        else:
            assert g is None and e is None, what


# ----------------------------------------------------------------------------- ReLU

@settings(max_examples=60, **KERNEL_SETTINGS)
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=4).filter(lambda s: np.prod(s) <= 200_000),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_relu_bit_identical(shape, dtype, seed):
    """The compiled ReLU equals the reference bit for bit, with zeros, NaN and infinities in both the
    input and the upstream gradient (the chunked, multi-threaded path is taken above 2**15 elements)."""
    K = compiled_kernels()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype=dtype)
    for a in (x, grad):
        flat = a.reshape(-1)
        where = rng.integers(0, flat.size, size=min(flat.size, 20)) if flat.size else []
        flat[where] = rng.choice(specials, size=len(where))
    y_ref, y_ours = R.relu_forward(x), K.relu_forward(x)
    assert y_ours.dtype == y_ref.dtype and np.array_equal(y_ours.view(np.uint8), y_ref.view(np.uint8))
    with np.errstate(invalid="ignore"):  # inf · 0 where a unit is off: NaN, on purpose
        g_ref = R.relu_backward(y_ref, grad)
    g_ours = K.relu_backward(y_ours, grad)
    assert g_ours.dtype == g_ref.dtype and np.array_equal(g_ours.view(np.uint8), g_ref.view(np.uint8))


# ----------------------------------------------------------------------------- dropout

def _with_specials(a, rng):
    specials = np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype=a.dtype)
    flat = a.reshape(-1)
    where = rng.integers(0, flat.size, size=min(flat.size, 20)) if flat.size else []
    flat[where] = rng.choice(specials, size=len(where))
    return a


@settings(max_examples=60, **KERNEL_SETTINGS)
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=4).filter(lambda s: np.prod(s) <= 200_000),
       dtype=st.sampled_from([np.float32, np.float64]), p=st.floats(0.0, 0.999),
       key=st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63, 2**64 - 1])),
       seed=st.integers(0, 2**16))
def test_dropout_bit_identical(shape, dtype, p, key, seed):
    """The compiled dropout draws the reference's mask and applies it with the same rounding, bit for
    bit, forward and backward, with zeros, NaN and infinities (the chunked, multi-threaded path is
    taken above 2**15 elements; keys near 2**64 wrap around)."""
    K = compiled_kernels()
    rng = np.random.default_rng(seed)
    x = _with_specials(rng.standard_normal(shape).astype(dtype), rng)
    with np.errstate(invalid="ignore"):  # inf · 0 where an element is dropped: NaN, on purpose
        expected = R.dropout_forward(x, p, key), R.dropout_backward(x[::-1].copy(), p, key)
    got = K.dropout_forward(x, p, key), K.dropout_backward(x[::-1].copy(), p, key)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.shape == e.shape and np.array_equal(g.view(np.uint8), e.view(np.uint8))


def test_dropout_is_the_same_with_any_thread_count():
    K = compiled_kernels()
    x = np.random.default_rng(0).standard_normal((64, 9216)).astype(np.float32)
    results = []
    for threads in (1, 2):
        with num_threads(threads):
            results.append(K.dropout_forward(x, 0.25, 2**64 - 5))
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], R.dropout_forward(x, 0.25, 2**64 - 5))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_mask_statistics(p):
    """The keep mask behaves like independent Bernoulli(1 - p) draws: the kept fraction of each
    mask, the correlation of neighbouring elements and of the masks of two keys are all within
    five standard deviations of what independent draws give."""
    n = 1_000_000
    keys = np.random.default_rng(1).integers(0, 2**64, size=4, dtype=np.uint64)
    masks = [R.dropout_keep_mask(int(k), n, p).astype(np.float64) for k in keys]
    sigma_mean = np.sqrt(p * (1 - p) / n)
    for m in masks:
        assert abs(m.mean() - (1 - p)) < 5 * sigma_mean
        lag1 = np.corrcoef(m[:-1], m[1:])[0, 1]
        assert abs(lag1) < 5 / np.sqrt(n), lag1
    assert abs(np.corrcoef(masks[0], masks[1])[0, 1]) < 5 / np.sqrt(n)
    # consecutive keys (as a counter would give) are independent too
    a, b = R.dropout_keep_mask(7, n, p), R.dropout_keep_mask(8, n, p)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    # the exact keep probability of the 32-bit comparison
    assert R.dropout_threshold(p) == round(p * 2**32)


# ----------------------------------------------------------------------------- SGD update

@settings(max_examples=80, **KERNEL_SETTINGS)
@given(size=st.sampled_from([0, 1, 7, 1000, 70_001]), dtype=st.sampled_from([np.float32, np.float64]),
       lr=st.sampled_from([0.0, 0.01, 0.1]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       dampening=st.sampled_from([0.0, 0.3]), weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
       nesterov=st.booleans(), first=st.booleans(), seed=st.integers(0, 2**16))
def test_sgd_update_bit_identical(size, dtype, lr, momentum, dampening, weight_decay, nesterov, first, seed):
    """One SGD step of the compiled kernel rounds exactly as the reference's sequence of NumPy
    operations, for every combination of momentum, dampening, weight decay, Nesterov and the first
    step, with zeros, NaN and infinities (70,001 elements take the multi-threaded path)."""
    K = compiled_kernels()
    rng = np.random.default_rng(seed)
    param = _with_specials(rng.standard_normal(size).astype(dtype), rng)
    grad = _with_specials(rng.standard_normal(size).astype(dtype), rng)
    buffer = rng.standard_normal(size).astype(dtype) if momentum else None
    results = []
    for backend in (R, K):
        p, b = param.copy(), None if buffer is None else buffer.copy()
        with np.errstate(invalid="ignore", over="ignore"):
            backend.sgd_update(p, grad, b, lr, momentum, dampening, weight_decay, nesterov, first)
        results.append((p, b))
    (p_ref, b_ref), (p_ours, b_ours) = results
    assert np.array_equal(p_ours.view(np.uint8), p_ref.view(np.uint8))
    if buffer is not None:
        assert np.array_equal(b_ours.view(np.uint8), b_ref.view(np.uint8))

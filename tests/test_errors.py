"""Bad input is rejected with a clear ValueError / TypeError / RuntimeError, never a crash.

* Layer-level checks: the message names the layer (e.g. ``Conv2d(``) and the offending shapes.
* A fuzz test of the compiled entry points through :mod:`nnscratch.ops` (cython backend):
  random, often absurd arguments; every call must either return a correctly shaped result
  (equal to the NumPy reference) or raise ValueError/TypeError. It runs in a subprocess so
  that a segfault fails the test instead of killing the session.
* A fuzz test of the file readers (IDX, weight files, load_model, checkpoints) through
  ``tests/fuzz_files.py``: truncated, mutated and hostile-header variants of valid files, each
  loaded in a forked child; every one must load or fail with a clear error naming the file,
  without crash, hang or more than 256 MB of memory. ``python tests/fuzz_files.py --cases N``
  runs many more cases and prints the counts.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import ops

RNG = np.random.default_rng(0)


def f64(*shape):
    return RNG.standard_normal(shape)


def raises(exc, call, *fragments):
    """``call()`` raises ``exc`` whose message contains every fragment; returns the message."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"
    return message


# ----------------------------------------------------------------------------- Conv2d

def conv():
    return nn.Conv2d(3, 4, 3, dtype=np.float64)


@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 1, 3, 8, 8)])
def test_conv2d_wrong_rank(backend, shape):
    raises(ValueError, lambda: conv()(f64(*shape)), "Conv2d(3, 4", str(shape), "4-D")


def test_conv2d_channel_mismatch(backend):
    raises(ValueError, lambda: conv()(f64(2, 2, 8, 8)), "Conv2d(3, 4", "(2, 2, 8, 8)", "(4, 3, 3, 3)")


def test_conv2d_kernel_larger_than_padded_input(backend):
    layer = nn.Conv2d(1, 2, 5, padding=1, dtype=np.float64)
    raises(ValueError, lambda: layer(f64(1, 1, 2, 2)), "Conv2d(1, 2", "(1, 1, 2, 2)", "(5, 5)")
    layer = nn.Conv2d(1, 2, (1, 4), dtype=np.float64)
    raises(ValueError, lambda: layer(f64(1, 1, 5, 3)), "Conv2d(1, 2", "(1, 1, 5, 3)", "(1, 4)")


@pytest.mark.parametrize("stride", [0, -1, (1, 0), (-2, 1)])
def test_conv2d_nonpositive_stride(stride):
    raises(ValueError, lambda: nn.Conv2d(1, 2, 3, stride=stride), "Conv2d(1, 2", "stride", str(stride))


@pytest.mark.parametrize("padding", [-1, (0, -1)])
def test_conv2d_negative_padding(padding):
    raises(ValueError, lambda: nn.Conv2d(1, 2, 3, padding=padding), "Conv2d(1, 2", "padding", str(padding))


@pytest.mark.parametrize("kernel", [0, (3, 0), (2,), (1, 2, 3), 2.5, "3", True, None])
def test_conv2d_bad_kernel_size(kernel):
    with pytest.raises((ValueError, TypeError), match=r"Conv2d\(1, 2.*kernel_size"):
        nn.Conv2d(1, 2, kernel)


@pytest.mark.parametrize("channels", [(0, 2), (1, 0), (-1, 2), (1.0, 2), (True, 2)])
def test_conv2d_bad_channel_counts(channels):
    with pytest.raises(ValueError, match=r"Conv2d\("):
        nn.Conv2d(*channels, 3)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float16, np.complex128])
def test_conv2d_non_float_input(backend, dtype):
    x = np.ones((2, 3, 5, 5), dtype=dtype)
    message = raises(TypeError, lambda: conv()(x), "Conv2d(3, 4", "(2, 3, 5, 5)", str(np.dtype(dtype)))
    if np.dtype(dtype).kind in "iub":
        assert "prepare_images" in message  # the hint for raw images


@pytest.mark.parametrize("x", [[[[[1.0]]]], None, 3.0, "image"])
def test_conv2d_non_array_input(backend, x):
    raises(TypeError, lambda: nn.Conv2d(1, 1, 1)(x), "Conv2d(1, 1", "numpy array")


def test_conv2d_grad_output_wrong_shape(backend):
    layer = conv()
    layer(f64(2, 3, 6, 6))
    raises(ValueError, lambda: layer.backward(f64(2, 4, 3, 3)), "Conv2d(3, 4", "(2, 4, 3, 3)", "(2, 4, 4, 4)")
    raises(ValueError, lambda: layer.backward(f64(2, 4, 16)), "Conv2d(3, 4", "(2, 4, 16)")
    raises(TypeError, lambda: layer.backward(np.ones((2, 4, 4, 4), dtype=np.int64)), "Conv2d(3, 4", "int64")


# ----------------------------------------------------------------------------- pooling

POOLS = [nn.MaxPool2d, nn.AvgPool2d]


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 1, 1, 8, 8)])
def test_pool_wrong_rank(backend, pool, shape):
    raises(ValueError, lambda: pool(2)(f64(*shape)), f"{pool.__name__}(", str(shape))


@pytest.mark.parametrize("pool", POOLS)
def test_pool_kernel_larger_than_input(backend, pool):
    raises(ValueError, lambda: pool(3)(f64(1, 2, 2, 5)), f"{pool.__name__}(", "(1, 2, 2, 5)", "(3, 3)")
    raises(ValueError, lambda: pool((2, 4), padding=(0, 1))(f64(1, 2, 2, 1)), f"{pool.__name__}(", "(1, 2, 2, 1)")


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kernel, padding", [(2, 2), (3, 2), (2, (0, 2)), ((4, 1), (1, 1)), (1, 1)])
def test_pool_padding_more_than_half_kernel(backend, pool, kernel, padding):
    def build_and_run():
        pool(kernel, stride=1, padding=padding)(f64(1, 1, 6, 6))

    raises(ValueError, build_and_run, f"{pool.__name__}(", "padding", "half")


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("kwargs", [dict(stride=0), dict(stride=(1, -1)), dict(padding=-1), dict(kernel_size=0)])
def test_pool_bad_hyper_parameters(pool, kwargs):
    kwargs = {"kernel_size": 2, **kwargs}
    with pytest.raises(ValueError, match=pool.__name__ + r"\("):
        pool(**kwargs)


@pytest.mark.parametrize("pool", POOLS)
def test_pool_integer_input(backend, pool):
    x = np.ones((1, 1, 4, 4), dtype=np.int32)
    raises(TypeError, lambda: pool(2)(x), f"{pool.__name__}(", "int32", "(1, 1, 4, 4)")


@pytest.mark.parametrize("pool", POOLS)
def test_pool_grad_output_wrong_shape(backend, pool):
    layer = pool(2)
    layer(f64(2, 3, 6, 6))
    raises(ValueError, lambda: layer.backward(f64(2, 3, 2, 2)), f"{pool.__name__}(", "(2, 3, 2, 2)", "(2, 3, 3, 3)")


# KNOWN BUG: max-pooling a plane with no pixels (H == 0 or W == 0) but with padding is accepted:
# every window is pure padding, the numpy backend returns -inf with negative "indices" and the
# cython backend returns 0 with index -1 (they disagree), and the backward then fails with a
# confusing "argmax holds indices outside the 0x3 input plane". ops.pool_geometry should reject
# empty planes. Left failing on purpose.
@pytest.mark.parametrize("shape", [(1, 1, 0, 3), (2, 1, 3, 0)])
def test_maxpool_empty_plane_with_padding(backend, shape):
    raises(ValueError, lambda: nn.MaxPool2d(2, stride=1, padding=1)(np.zeros(shape)), "MaxPool2d(")


def test_max_pool2d_backward_bad_argmax(backend):
    x = f64(1, 2, 4, 4)
    y, argmax = ops.max_pool2d(x, 2)
    raises(TypeError, lambda: ops.max_pool2d_backward(y, argmax.astype(np.int32), x.shape), "argmax")
    raises(ValueError, lambda: ops.max_pool2d_backward(y, argmax + 16, x.shape), "argmax", "4x4")
    raises(ValueError, lambda: ops.max_pool2d_backward(y, argmax - 100, x.shape), "argmax")
    raises(ValueError, lambda: ops.max_pool2d_backward(y, argmax, (2, 2, 4, 4)), "argmax shape", "(2, 2, 4, 4)")
    raises(ValueError, lambda: ops.max_pool2d_backward(y[:, :, :1], argmax, x.shape), "grad_output")


# KNOWN BUGS, left failing on purpose: an empty batch (N == 0) is accepted by the forward pass but
# * reference.maxpool2d_backward (numpy backend only): argmax.reshape(n * c, -1) raises
#   "cannot reshape array of size 0 into shape (0,newaxis)";
# * Flatten.forward (both backends): x.reshape(x.shape[:start_dim] + (-1,)) raises the same
#   numpy error (-1 cannot be inferred from a size-0 array); the trailing size should be
#   computed as prod(x.shape[start_dim:]).
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), lambda: nn.MaxPool2d(2),
                                  lambda: nn.AvgPool2d(2), lambda: nn.Sequential(nn.Flatten(), nn.Dense(32, 3))],
                         ids=["Conv2d", "MaxPool2d", "AvgPool2d", "Flatten-Dense"])
def test_empty_batch(backend, make):
    """A batch of 0 images goes forward and backward with the right (empty) shapes."""
    layer = make()
    x = np.zeros((0, 2, 4, 4))
    y = layer(x)
    assert y.shape[0] == 0
    grad_x = layer.backward(np.zeros(y.shape))
    assert grad_x.shape == x.shape


# ----------------------------------------------------------------------------- Dense

def test_dense_feature_mismatch(backend):
    layer = nn.Dense(5, 3, dtype=np.float64)
    raises(ValueError, lambda: layer(f64(4, 6)), "Dense(5, 3)", "(4, 6)", "5")


@pytest.mark.parametrize("shape", [(5,), (4, 5, 1), (1, 1, 4, 5)])
def test_dense_wrong_rank(backend, shape):
    raises(ValueError, lambda: nn.Dense(5, 3)(f64(*shape)), "Dense(5, 3)", str(shape))


def test_dense_integer_input_and_bad_grad(backend):
    layer = nn.Dense(5, 3, dtype=np.float64)
    raises(TypeError, lambda: layer(np.ones((4, 5), dtype=np.int64)), "Dense(5, 3)", "int64")
    layer(f64(4, 5))
    raises(ValueError, lambda: layer.backward(f64(4, 4)), "Dense(5, 3)", "(4, 4)", "(4, 3)")
    raises(ValueError, lambda: layer.backward(f64(3, 3)), "Dense(5, 3)", "(3, 3)")


@pytest.mark.parametrize("features", [(0, 3), (5, 0), (2.0, 3)])
def test_dense_bad_sizes(features):
    with pytest.raises(ValueError, match=r"Dense\("):
        nn.Dense(*features)


# ----------------------------------------------------------------------------- activations, flatten, dropout

@pytest.mark.parametrize("layer", [nn.LogSoftmax(dim=2), nn.Softmax(dim=-3)], ids=["logsoftmax", "softmax"])
def test_softmax_dim_out_of_range(layer):
    raises(ValueError, lambda: layer(f64(4, 3)), type(layer).__name__ + "(", "(4, 3)")


def test_flatten_needs_an_axis():
    raises(ValueError, lambda: nn.Flatten()(f64(5)), "Flatten(", "(5,)")


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LogSoftmax(), nn.Softmax(), nn.Dropout(0.5), nn.Flatten()],
                         ids=["ReLU", "LogSoftmax", "Softmax", "Dropout", "Flatten"])
def test_non_float_input_to_elementwise_layers(layer):
    raises(TypeError, lambda: layer(np.ones((2, 3), dtype=np.int64)), type(layer).__name__ + "(", "int64")


# Every element-wise layer checks grad_output's shape: a (1, C) or (N, 1) gradient must not broadcast
# silently, and Flatten must not reshape a same-size array (e.g. the transposed gradient).
@pytest.mark.parametrize(
    "layer, x, bad_grad",
    [
        (nn.ReLU(), f64(4, 3), f64(1, 3)),
        (nn.LogSoftmax(), f64(4, 3), f64(1, 3)),
        (nn.Softmax(), f64(4, 3), f64(4, 1)),
        (nn.Dropout(0.5), f64(4, 3), f64(1, 3)),
        (nn.Flatten(), f64(2, 3, 2, 2), f64(12, 2)),
        (nn.Flatten(), f64(2, 3, 2, 2), f64(2, 5)),
    ],
    ids=["ReLU", "LogSoftmax", "Softmax", "Dropout", "Flatten-transposed", "Flatten-wrong-size"],
)
def test_elementwise_grad_output_wrong_shape(layer, x, bad_grad):
    layer(x)
    raises(ValueError, lambda: layer.backward(bad_grad), type(layer).__name__ + "(", str(bad_grad.shape))


def test_dropout_bad_p():
    for p in (-0.1, 1.0, 1.5):
        raises(ValueError, lambda: nn.Dropout(p), "Dropout(", str(p))


def test_dropout_op_bad_arguments(backend):
    x = f64(4, 3)
    for p in (-0.1, 1.0, float("nan"), "0.5"):
        raises(ValueError, lambda: ops.dropout(x, p, 1, where="Dropout(p=?)"), "Dropout(p=?)", "p must be")
    for key in (-1, 2**64, 1.5, True, None):
        raises(ValueError, lambda: ops.dropout(x, 0.5, key), "dropout", "key must be")
    raises(ValueError, lambda: ops.dropout_backward(f64(4, 1), 0.5, 1, (4, 3)), "grad_output", "(4, 1)", "(4, 3)")
    raises(TypeError, lambda: ops.dropout(x.astype(np.int32), 0.5, 1), "dropout", "int32")


def test_sgd_update_bad_arguments(backend):
    param, grad = f64(3, 2), f64(3, 2)
    raises(TypeError, lambda: ops.sgd_update(param.astype(np.int64), grad, None, 0.1), "SGD", "int64")
    raises(ValueError, lambda: ops.sgd_update(param.T, grad.T, None, 0.1), "SGD", "(2, 3)", "C-contiguous")
    frozen = param.copy()
    frozen.flags.writeable = False
    raises(ValueError, lambda: ops.sgd_update(frozen, grad, None, 0.1), "SGD", "writeable")
    raises(ValueError, lambda: ops.sgd_update(param, f64(2, 3), None, 0.1), "SGD", "(2, 3)", "(3, 2)")
    raises(ValueError, lambda: ops.sgd_update(param, grad, f64(6), 0.1, momentum=0.9), "SGD", "momentum buffer")
    raises(ValueError, lambda: ops.sgd_update(param, grad, param.astype(np.float32), 0.1, momentum=0.9),
           "SGD", "float64")


# ----------------------------------------------------------------------------- backward before forward

@pytest.mark.parametrize(
    "make, grad_shape",
    [
        (lambda: nn.Conv2d(1, 2, 3), (1, 2, 2, 2)),
        (lambda: nn.MaxPool2d(2), (1, 1, 2, 2)),
        (lambda: nn.AvgPool2d(2), (1, 1, 2, 2)),
        (lambda: nn.Dense(3, 2), (4, 2)),
        (lambda: nn.ReLU(), (4, 2)),
        (lambda: nn.LogSoftmax(), (4, 2)),
        (lambda: nn.Softmax(), (4, 2)),
        (lambda: nn.Flatten(), (4, 2)),
        (lambda: nn.Dropout(0.5), (4, 2)),
        (lambda: nn.Sequential(nn.Dense(3, 2), nn.ReLU()), (4, 2)),
    ],
    ids=["Conv2d", "MaxPool2d", "AvgPool2d", "Dense", "ReLU", "LogSoftmax", "Softmax", "Flatten", "Dropout",
         "Sequential"],
)
def test_backward_before_forward(backend, make, grad_shape):
    layer = make()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones(grad_shape))


# ----------------------------------------------------------------------------- losses

@pytest.mark.parametrize("loss_cls", [nn.CrossEntropyLoss, nn.NLLLoss])
def test_label_losses_reject_bad_targets(loss_cls):
    name = loss_cls.__name__
    loss = loss_cls()
    z = f64(4, 3)
    raises(ValueError, lambda: loss(z, np.array([[0], [1], [2], [0]])), name, "(4, 1)", "(4, 3)")
    raises(ValueError, lambda: loss(z, np.array([0, 1, 2])), name, "(3,)", "(4,)")
    raises(ValueError, lambda: loss(z, np.array([0, 1, 3, 0])), name, "[0, 3)", "3")
    raises(ValueError, lambda: loss(z, np.array([0, -1, 2, 0])), name, "[0, 3)", "-1")
    raises(TypeError, lambda: loss(z, np.array([0.0, 1.0, 2.0, 0.0])), name, "float64")
    raises(TypeError, lambda: loss(z, np.array([True, False, True, False])), name, "bool")
    raises(ValueError, lambda: loss(f64(4), np.array([0, 1, 2, 0])), name, "(4,)")
    raises(ValueError, lambda: loss(f64(4, 3, 1), np.array([0, 1, 2, 0])), name, "(4, 3, 1)")
    raises(TypeError, lambda: loss(np.ones((4, 3), dtype=np.int64), np.array([0, 1, 2, 0])), name, "int64")


def test_mse_shape_mismatch():
    raises(ValueError, lambda: nn.MSELoss()(f64(4, 3), f64(3, 4)), "MSELoss", "(4, 3)", "(3, 4)")
    raises(ValueError, lambda: nn.MSELoss()(f64(4, 3), f64(4, 3, 1)), "MSELoss", "(4, 3, 1)")
    raises(TypeError, lambda: nn.MSELoss()(np.ones((2, 2), dtype=int), f64(2, 2)), "MSELoss", "int64")


@pytest.mark.parametrize("loss_cls", [nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss])
def test_loss_backward_before_call_and_bad_reduction(loss_cls):
    with pytest.raises(RuntimeError, match=loss_cls.__name__):
        loss_cls().backward()
    with pytest.raises(ValueError, match=loss_cls.__name__):
        loss_cls(reduction="none")


# KNOWN BUG: with reduction="mean", an empty batch raises ZeroDivisionError
# (losses._Loss._scale computes 1.0 / count with count == 0). Expected: nan (as PyTorch) or a
# ValueError naming the loss. Left failing on purpose.
@pytest.mark.parametrize("loss_cls", [nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss])
def test_loss_empty_batch_mean(loss_cls):
    x, t = (np.zeros((0, 3)), np.zeros(0, dtype=np.int64)) if loss_cls is not nn.MSELoss else (np.zeros((0, 3)), np.zeros((0, 3)))
    try:
        value = loss_cls()(x, t)
    except ValueError as error:
        assert loss_cls.__name__ in str(error)
    else:
        assert np.isnan(value)


def test_set_num_threads_rejects_nonpositive():
    previous = nn.get_num_threads()
    try:
        for n in (0, -1):
            with pytest.raises(ValueError):
                nn.set_num_threads(n)
        assert nn.get_num_threads() == previous
    finally:
        nn.set_num_threads(previous)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        nn.set_backend("fortran")


# ----------------------------------------------------------------------------- fuzzing nnscratch.ops (cython)

FUZZ_EXAMPLES = 800

FUZZ_SCRIPT = textwrap.dedent(r'''
    import faulthandler, json, sys
    faulthandler.enable()
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    import nnscratch as nn
    from nnscratch import ops

    nn.set_backend("cython")
    LOG = open(sys.argv[1], "w", buffering=1)  # the call in progress, for a post-mortem of a crash
    EXAMPLES = int(sys.argv[2])
    report = {"calls": 0, "returned": 0, "rejected": 0, "unexpected": {}, "wrong_shape": {}, "mismatch": {},
              "reference_unexpected": {}}


    def note(kind, key, desc):
        examples = report[kind].setdefault(key, [])
        if len(examples) < 3:
            examples.append(desc[:400])


    def describe(v):
        if isinstance(v, np.ndarray):
            layout = "C" if v.flags.c_contiguous else "noncontig"
            return f"array{v.shape}:{v.dtype}:{layout}"
        text = repr(v)
        return text if len(text) < 60 else text[:57] + "..."


    def pair(v):
        return (v, v) if isinstance(v, (int, np.integer)) else tuple(v)


    def window(h, w, kernel, stride, padding):
        (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1


    # expected output shapes of a call that returned (so its arguments were accepted)
    def shape_conv2d(x, w, b=None, stride=1, padding=0):
        return ((x.shape[0], w.shape[0]) + window(x.shape[2], x.shape[3], w.shape[2:], stride, padding),)

    def shape_conv2d_backward(x, w, g, stride=1, padding=0, need_input_grad=True, need_weight_grad=True):
        return (x.shape if need_input_grad else None, w.shape if need_weight_grad else None)

    def shape_max_pool2d(x, kernel, stride=None, padding=0):
        s = x.shape[:2] + window(x.shape[2], x.shape[3], kernel, kernel if stride is None else stride, padding)
        return (s, s)

    def shape_max_pool2d_backward(g, argmax, input_shape):
        return (tuple(int(s) for s in input_shape),)

    def shape_avg_pool2d(x, kernel, stride=None, padding=0):
        return shape_max_pool2d(x, kernel, stride, padding)[:1]

    def shape_avg_pool2d_backward(g, input_shape, kernel, stride=None, padding=0):
        return (tuple(int(s) for s in input_shape),)

    def shape_linear(x, w, b=None):
        return ((x.shape[0], w.shape[0]),)

    def shape_linear_backward(x, w, g, need_input_grad=True, need_weight_grad=True):
        return (x.shape if need_input_grad else None, w.shape if need_weight_grad else None)

    def shape_dropout(x, p, key):
        return (x.shape,)

    def shape_dropout_backward(g, p, key, output_shape):
        return (tuple(output_shape),)


    def same(a, b):
        if (a is None) != (b is None):
            return "one is None"
        if a is None:
            return ""
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{a.shape}:{a.dtype} vs reference {b.shape}:{b.dtype}"
        if a.dtype.kind in "iu":
            return "" if np.array_equal(a, b) else "integer results differ"
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return "NaNs in different places"
        fa, fb = a[~np.isnan(a)].astype(np.float64), b[~np.isnan(b)].astype(np.float64)
        if fa.size == 0:
            return ""
        inf = np.isinf(fb)
        if not np.array_equal(fa[inf], fb[inf]):
            return "infinities differ"
        fa, fb = fa[~inf], fb[~inf]
        if fa.size == 0:
            return ""
        if np.isinf(fa).any():
            return "compiled result has an infinity where the reference has a finite value"
        tol = (1e-12 if a.dtype == np.float64 else 1e-4) * max(1.0, float(np.abs(fb).max()))
        diff = float(np.abs(fa - fb).max())
        return "" if diff <= tol else f"max|diff| {diff:.3e} > {tol:.3e}"


    def attempt(name, args, kwargs):
        func = getattr(ops, name)
        desc = name + "(" + ", ".join([describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()]) + ")"
        LOG.write(desc + "\n")
        report["calls"] += 1
        nn.set_backend("cython")
        try:
            out = func(*args, **kwargs)
        except (ValueError, TypeError):
            report["rejected"] += 1
            return
        except Exception as error:
            note("unexpected", f"{name}: {type(error).__name__}: {str(error)[:100]}", desc)
            return
        report["returned"] += 1
        outs = out if isinstance(out, tuple) else (out,)
        expected = globals()["shape_" + name](*args, **kwargs)
        got = tuple(None if o is None else getattr(o, "shape", repr(type(o))) for o in outs)
        if got != expected:
            note("wrong_shape", name, f"{desc}: got {got}, expected {expected}")
            return
        nn.set_backend("numpy")
        try:
            ref = func(*args, **kwargs)
        except Exception as error:
            note("reference_unexpected", f"{name}: {type(error).__name__}: {str(error)[:100]}", desc)
            return
        finally:
            nn.set_backend("cython")
        refs = ref if isinstance(ref, tuple) else (ref,)
        for i, (o, r) in enumerate(zip(outs, refs)):
            problem = same(o, r)
            if problem:
                note("mismatch", f"{name} output {i}", f"{desc}: {problem}")


    HUGE = [2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63, 10**30]
    JUNK = [None, 1.5, "2", True, (1,), (1, 2, 3), [1, 2], np.float64(2.0), (1.0, 1), b"\x01"]
    BAD_DTYPES = ["float16", "int64", "int32", "uint8", "bool", "complex128", "object", "longdouble"]
    floats = st.sampled_from(["float64", "float32"])


    def hyper(draw, low, high, huge=True):
        """A stride / padding / kernel size: mostly sane, sometimes absurd."""
        kind = draw(st.sampled_from(["int"] * 6 + ["pair"] * 2 + ["npint", "neg", "huge", "junk"]))
        if kind == "int":
            return draw(st.integers(low, high))
        if kind == "pair":
            return (draw(st.integers(low, high)), draw(st.integers(low, high)))
        if kind == "npint":
            return np.int64(draw(st.integers(low, high)))
        if kind == "neg":
            return draw(st.sampled_from([-1, -2**63, (1, -1), (-3, 2)]))
        if kind == "huge" and huge:
            return draw(st.sampled_from(HUGE + [(1, 2**31), (2**40, 1)]))
        return draw(st.sampled_from(JUNK))


    def array(draw, shape, dtype, rng, kind=None):
        """A float array of ``shape``/``dtype`` (values with some NaN/+inf), or a mutation of it."""
        kind = kind or draw(st.sampled_from(["ok"] * 8 + ["dtype", "rank", "dim", "nonarray", "layout", "otherfloat"]))
        shape = tuple(shape)
        if kind == "rank":
            shape = shape[:-1] if shape and draw(st.booleans()) else shape + (1,)
        if kind == "dim" and shape:
            i = draw(st.integers(0, len(shape) - 1))
            shape = shape[:i] + (draw(st.sampled_from([0, 1, 2, 5, 9])),) + shape[i + 1:]
        if kind == "dtype":
            dtype = draw(st.sampled_from(BAD_DTYPES))
        if kind == "otherfloat":
            dtype = "float32" if dtype == "float64" else "float64"
        if kind == "nonarray":
            return draw(st.sampled_from([None, 3.0, "x", [1.0, 2.0], ((1.0,),), object()]))
        values = rng.standard_normal(shape) if shape else np.float64(rng.standard_normal())
        values = np.asarray(values)
        if values.size and rng.random() < 0.2:
            values[rng.random(values.shape) < 0.1] = np.nan
            values[rng.random(values.shape) < 0.05] = np.inf
        if dtype == "object":
            a = np.empty(values.shape, dtype=object)
            a[...] = 1.0
        else:
            a = values.astype(dtype)
        if kind == "layout" and a.ndim >= 1:
            how = draw(st.sampled_from(["fortran", "reversed", "strided"]))
            if how == "fortran":
                a = np.asfortranarray(a)
            elif how == "reversed":
                a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
            else:
                big = np.repeat(a, 2, axis=-1)
                a = big[..., ::2]
        return a


    def geometry(draw):
        return dict(n=draw(st.sampled_from([0, 1, 2, 3])), c=draw(st.sampled_from([0, 1, 2, 3])),
                    f=draw(st.sampled_from([0, 1, 2, 3])), h=draw(st.integers(0, 7)), w=draw(st.integers(0, 7)),
                    kh=draw(st.integers(0, 4)), kw=draw(st.integers(0, 4)), dtype=draw(floats))


    def fuzz_conv(draw, rng, backward):
        g = geometry(draw)
        x = array(draw, (g["n"], g["c"], g["h"], g["w"]), g["dtype"], rng)
        weight = array(draw, (g["f"], g["c"], g["kh"], g["kw"]), g["dtype"], rng)
        stride, padding = hyper(draw, 1, 3), hyper(draw, 0, 3, huge=False)
        if not backward:
            bias = draw(st.sampled_from([None, "array"]))
            if bias == "array":
                bias = array(draw, (g["f"],), g["dtype"], rng)
            attempt("conv2d", (x, weight, bias), dict(stride=stride, padding=padding))
            return
        try:  # the right grad_y shape when the geometry is sane, else something
            oh, ow = window(g["h"], g["w"], (g["kh"], g["kw"]), stride, padding)
            gshape = (g["n"], g["f"], max(int(oh), 0), max(int(ow), 0))
            if max(gshape[2], gshape[3]) > 1000 or oh != int(oh) or ow != int(ow):
                raise ValueError
        except Exception:
            gshape = (g["n"], g["f"], 2, 2)
        grad_y = array(draw, gshape, g["dtype"], rng)
        attempt("conv2d_backward", (x, weight, grad_y, stride, padding),
                dict(need_input_grad=draw(st.booleans()), need_weight_grad=draw(st.booleans())))


    def fuzz_pool(draw, rng, which, backward):
        g = geometry(draw)
        x = array(draw, (g["n"], g["c"], g["h"], g["w"]), g["dtype"], rng)
        kernel = hyper(draw, 1, 4)
        stride = draw(st.sampled_from([None, "draw"]))
        stride = hyper(draw, 1, 3) if stride == "draw" else None
        padding = hyper(draw, 0, 2)
        if not backward:
            attempt(which, (x, kernel), dict(stride=stride, padding=padding))
            return
        # a genuine forward result when possible, then perhaps a mutation of it
        try:
            nn.set_backend("cython")
            out = getattr(ops, which)(np.ascontiguousarray(np.nan_to_num(x)) if isinstance(x, np.ndarray) else x,
                                      kernel, stride, padding)
            y = out[0] if which == "max_pool2d" else out
            argmax = out[1] if which == "max_pool2d" else None
        except Exception:
            y, argmax = np.zeros((g["n"], g["c"], 2, 2)), np.zeros((g["n"], g["c"], 2, 2), dtype=np.int64)
        grad_y = array(draw, y.shape, g["dtype"], rng)
        shape = (g["n"], g["c"], g["h"], g["w"])
        shape_kind = draw(st.sampled_from(["ok"] * 6 + ["neg", "short", "zero", "bigger", "np", "junk"]))
        if shape_kind == "neg":
            shape = (shape[0], shape[1], -shape[2] - 1, shape[3])
        elif shape_kind == "short":
            shape = shape[1:]
        elif shape_kind == "zero":
            shape = (shape[0], shape[1], 0, shape[3])
        elif shape_kind == "bigger":
            shape = (shape[0], shape[1], shape[2] + 1, shape[3] + 2)
        elif shape_kind == "np":
            shape = np.array(shape)
        elif shape_kind == "junk":
            shape = draw(st.sampled_from([None, 5, "abcd", (1, 1, None, 2)]))
        if which == "max_pool2d":
            if argmax is None:
                argmax = np.zeros(y.shape, dtype=np.int64)
            mutation = draw(st.sampled_from(["ok"] * 6 + ["int32", "float", "neg", "big", "shape", "layout", "list"]))
            if mutation == "int32":
                argmax = argmax.astype(np.int32)
            elif mutation == "float":
                argmax = argmax.astype(np.float64)
            elif mutation == "neg" and argmax.size:
                argmax = argmax.copy(); argmax.flat[0] = -1
            elif mutation == "big" and argmax.size:
                argmax = argmax.copy(); argmax.flat[-1] = 2**40
            elif mutation == "shape":
                argmax = argmax[..., :1] if argmax.ndim == 4 and argmax.shape[-1] > 1 else argmax.reshape(-1)
            elif mutation == "layout" and argmax.ndim == 4:
                argmax = np.asfortranarray(argmax)
            elif mutation == "list":
                argmax = argmax.tolist()
            attempt("max_pool2d_backward", (grad_y, argmax, shape), {})
        else:
            attempt("avg_pool2d_backward", (grad_y, shape, kernel), dict(stride=stride, padding=padding))


    def fuzz_linear(draw, rng, backward):
        n, fin, fout = (draw(st.sampled_from([0, 1, 2, 5])) for _ in range(3))
        dtype = draw(floats)
        x, weight = array(draw, (n, fin), dtype, rng), array(draw, (fout, fin), dtype, rng)
        if not backward:
            bias = array(draw, (fout,), dtype, rng) if draw(st.booleans()) else None
            attempt("linear", (x, weight, bias), {})
        else:
            attempt("linear_backward", (x, weight, array(draw, (n, fout), dtype, rng)),
                    dict(need_input_grad=draw(st.booleans()), need_weight_grad=draw(st.booleans())))


    def fuzz_dropout(draw, rng, backward):
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 5]), min_size=1, max_size=4)))
        x = array(draw, shape, draw(floats), rng)
        p = draw(st.sampled_from([0.0, 0.5, 0.999, -0.5, 1.0, 2.0, float("nan"), None, "0.5"]))
        key = draw(st.sampled_from([0, 7, 2**64 - 1, -1, 2**64, 2**70, 1.5, None, True, np.uint64(3)]))
        if not backward:
            attempt("dropout", (x, p, key), {})
        else:
            output_shape = draw(st.sampled_from([shape, shape[:-1] + (3,), (2**40,), None]))
            attempt("dropout_backward", (x, p, key, output_shape), {})


    OPS = ["conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "linear", "linear_backward", "dropout", "dropout_backward"]


    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data(), st.integers(0, 2**32 - 1))
    def fuzz(data, seed):
        draw, rng = data.draw, np.random.default_rng(seed)
        op = draw(st.sampled_from(OPS))
        backward = op.endswith("_backward")
        if op.startswith("conv2d"):
            fuzz_conv(draw, rng, backward)
        elif op.startswith("linear"):
            fuzz_linear(draw, rng, backward)
        elif op.startswith("dropout"):
            fuzz_dropout(draw, rng, backward)
        else:
            fuzz_pool(draw, rng, op[:10], backward)


    # a few absurd calls first, always the same
    x = np.ones((1, 2, 5, 5))
    w = np.ones((3, 2, 2, 2))
    for stride in HUGE + [(1, 2**31), (2**31, 1)]:
        attempt("conv2d", (x, w, None), dict(stride=stride, padding=0))
        attempt("conv2d_backward", (x, w, np.ones((1, 3) + window(5, 5, (2, 2), stride, 0)), stride, 0), {})
        attempt("max_pool2d", (x, 2), dict(stride=stride))
        attempt("avg_pool2d", (x, 2), dict(stride=stride))
    for xs, ws in [((0, 2, 4, 4), (3, 2, 2, 2)), ((2, 0, 4, 4), (3, 0, 2, 2)), ((2, 2, 4, 4), (0, 2, 2, 2)),
                   ((2, 2, 4, 4), (3, 2, 0, 2)), ((2, 2, 0, 4), (3, 2, 1, 1)), ((2, 2, 0, 4), (3, 2, 2, 2))]:
        attempt("conv2d", (np.ones(xs), np.ones(ws), np.ones(ws[0])), dict(padding=1))
    for xs in [(0, 1, 4, 4), (1, 0, 4, 4), (1, 1, 0, 3), (1, 1, 3, 0)]:
        attempt("max_pool2d", (np.ones(xs), 2), dict(stride=1, padding=1))
        attempt("avg_pool2d", (np.ones(xs), 2), dict(stride=1, padding=1))
    y0, a0 = ops.max_pool2d(np.ones((0, 2, 4, 4)), 2)
    attempt("max_pool2d_backward", (y0, a0, (0, 2, 4, 4)), {})
    attempt("avg_pool2d_backward", (np.ones((0, 2, 2, 2)), (0, 2, 4, 4), 2), {})

    fuzz()
    LOG.write("DONE\n")
    print(json.dumps(report))
''')


def run_python(code, *args, timeout=120):
    """Run ``code`` in a fresh interpreter (faulthandler on) with the repository importable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(nn.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NNSCRATCH_NUM_THREADS="2", PYTHONFAULTHANDLER="1")
    env.pop("NNSCRATCH_BACKEND", None)
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=root)


def crash_message(result, log_path):
    last = "?"
    if os.path.exists(log_path):
        lines = open(log_path).read().splitlines()
        last = lines[-1] if lines else "?"
    return (f"the fuzz subprocess died (return code {result.returncode}"
            + (f", signal {-result.returncode}" if result.returncode < 0 else "")
            + f") during: {last}\nstderr:\n{result.stderr[-3000:]}")


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory):
    if nn._backend._kernels is None:
        pytest.fail("nnscratch._kernels is not built: the fuzz test needs the cython backend", pytrace=False)
    log = tmp_path_factory.mktemp("fuzz") / "calls.log"
    result = run_python(FUZZ_SCRIPT, log, FUZZ_EXAMPLES)
    report = None
    if result.returncode == 0:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    return result, log, report


def test_fuzz_harness_detects_a_segfault(tmp_path):
    """The subprocess harness really notices a crash (here a deliberate NULL read)."""
    log = tmp_path / "calls.log"
    code = "import sys, ctypes; open(sys.argv[1], 'w').write('ctypes.string_at(0)\\n'); ctypes.string_at(0)"
    result = run_python(code, log, timeout=60)
    assert result.returncode != 0
    assert result.returncode < 0 or "Segmentation fault" in result.stderr or "Fatal Python error" in result.stderr
    assert "ctypes.string_at(0)" in crash_message(result, log)


def test_fuzz_ops_never_crash(fuzz_run):
    result, log, report = fuzz_run
    assert result.returncode == 0, crash_message(result, log)
    assert report["calls"] >= 0.9 * FUZZ_EXAMPLES
    # the fuzzer must exercise both outcomes, not only reject everything
    assert report["returned"] > 0.15 * report["calls"], report
    assert report["rejected"] > 0.15 * report["calls"], report


def test_fuzz_ops_raise_only_value_or_type_errors(fuzz_run):
    """Every call returned or raised ValueError/TypeError, and what it returned had the right shape.

    At the time of writing this FAILS: a stride >= 2**31 passes ops' validation (only ``>= 1`` is
    checked) and the compiled kernels then raise OverflowError ("value too large to convert to
    int") converting it to a C int; the numpy backend returns the (1-pixel-wide) result."""
    result, log, report = fuzz_run
    assert result.returncode == 0, crash_message(result, log)
    problems = {**report["unexpected"], **{f"wrong shape: {k}": v for k, v in report["wrong_shape"].items()}}
    assert not problems, "unexpected outcomes:\n" + json.dumps(problems, indent=1)


def test_fuzz_results_equal_reference(fuzz_run):
    """What the compiled kernels return equals the NumPy reference on the same (accepted) arguments.

    At the time of writing this FAILS on max_pool2d of an empty plane with padding (H or W == 0):
    see test_maxpool_empty_plane_with_padding; and on max_pool2d_backward of an empty batch, which
    the compiled kernel handles but reference.maxpool2d_backward does not: see test_empty_batch."""
    result, log, report = fuzz_run
    assert result.returncode == 0, crash_message(result, log)
    problems = {**report["mismatch"], **{f"reference raised: {k}": v for k, v in report["reference_unexpected"].items()}}
    assert not problems, "compiled vs reference:\n" + json.dumps(problems, indent=1)


# ----------------------------------------------------------------------------- fuzzing the file readers

FILE_FUZZ_CASES = 20  # per reader, after the fixed "classic" hostile files; the script runs more
FILE_FUZZ_BOUND_MB = 256


@pytest.fixture(scope="module")
def file_fuzz_report():
    if not sys.platform.startswith("linux"):
        pytest.skip("the file fuzz harness forks and reads /proc (Linux)")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_files.py")
    code = f"import runpy, sys; sys.argv = [{script!r}, '--cases', '{FILE_FUZZ_CASES}', '--json', " \
           f"'--bound-mb', '{FILE_FUZZ_BOUND_MB}']; runpy.run_path({script!r}, run_name='__main__')"
    result = run_python(code, timeout=600)
    assert result.returncode == 0, f"the file fuzz harness failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def file_fuzz_problems(report, keys):
    return {reader: {name: lines for name, lines in r["examples"].items() if name.split(":")[0] in keys}
            for reader, r in report["readers"].items() if any(r["counts"][key] for key in keys)}


def test_file_fuzz_harness_classifies_outcomes(tmp_path, monkeypatch):
    """The harness really sees a crash, a hang, a memory blow-up and an unclear error."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the file fuzz harness forks and reads /proc (Linux)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import fuzz_files
    finally:
        sys.path.pop(0)
    path = tmp_path / "any.bin"
    path.write_bytes(b"")

    def crash(*args):
        import ctypes
        ctypes.string_at(0)

    def hang(*args):
        import time
        time.sleep(60)

    def memory(*args):
        return np.ones(40 * 2**20 // 8)  # 40 MB, above the 20 MB bound used here

    def unclear(*args):
        raise KeyError("rng")

    def clear(p, *args):
        raise ValueError(f"{p}: bad")

    expected = {"crash": crash, "hang": hang, "memory": memory, "unclear": unclear, "clear": clear,
                "accepted": lambda *args: None}
    for outcome, reader in expected.items():
        monkeypatch.setitem(fuzz_files.READERS, outcome, reader)
        result = fuzz_files.run_case(outcome, path, timeout=2)
        assert fuzz_files.classify(result, path, bound_mb=20) == outcome, (outcome, result)


def test_file_fuzz_no_crash_hang_or_memory_blowup(file_fuzz_report):
    """Every hostile, truncated or mutated file stays under 256 MB above the child's start,
    returns within the time limit and does not kill the process."""
    for reader, r in file_fuzz_report["readers"].items():
        assert r["counts"]["tried"] >= FILE_FUZZ_CASES, (reader, r["counts"])
        assert r["counts"]["clear"] > 0, (reader, r["counts"])  # the variants do reach the checks
    problems = file_fuzz_problems(file_fuzz_report, ["crash", "hang", "memory"])
    assert not problems, json.dumps(problems, indent=1)


def test_file_fuzz_errors_name_the_file(file_fuzz_report):
    """Every refused file raised ValueError/TypeError/OSError naming the file (load_model's
    layer-argument errors, e.g. MaxPool2d kernel_size 2**63-1, once said only "build_model")."""
    problems = file_fuzz_problems(file_fuzz_report, ["unclear"])
    assert not problems, json.dumps(problems, indent=1)


def test_file_fuzz_failed_loads_change_nothing(file_fuzz_report):
    """A load that fails leaves the model and optimizer as they were, and no load touches
    NumPy's global random generator (a checkpoint naming "seed" used to reseed it)."""
    problems = file_fuzz_problems(file_fuzz_report, ["model_changed_on_error", "global_rng_changed"])
    assert not problems, json.dumps(problems, indent=1)

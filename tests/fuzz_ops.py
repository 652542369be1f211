"""Fuzzing the compiled entry points through :mod:`nnscratch.ops` (cython backend).

Random, often absurd arguments (hypothesis, derandomized): every call must either return a
correctly shaped result, equal to the NumPy reference on the same arguments, or raise
ValueError/TypeError. Each call is written to LOG before it runs, for a post-mortem of a crash.
``tests/test_errors.py`` runs this script in a subprocess, so that a segfault fails the test
instead of killing the session::

    python tests/fuzz_ops.py LOG EXAMPLES    # prints the report as one JSON line
"""
import faulthandler
import json
import sys
from pathlib import Path

faulthandler.enable()
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
import nnscratch as nn
from nnscratch import ops

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/, for the shared helpers
from strategies import output_hw

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


# expected output shapes of a call that returned (so its arguments were accepted)
def shape_conv2d(x, w, b=None, stride=1, padding=0):
    return ((x.shape[0], w.shape[0]) + output_hw(x.shape[2], x.shape[3], w.shape[2:], stride, padding),)

def shape_conv2d_backward(x, w, g, stride=1, padding=0, need_input_grad=True, need_weight_grad=True):
    return (x.shape if need_input_grad else None, w.shape if need_weight_grad else None)

def shape_max_pool2d(x, kernel, stride=None, padding=0):
    s = x.shape[:2] + output_hw(x.shape[2], x.shape[3], kernel, kernel if stride is None else stride, padding)
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
        oh, ow = output_hw(g["h"], g["w"], (g["kh"], g["kw"]), stride, padding)
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
            argmax = argmax.copy()
            argmax.flat[0] = -1
        elif mutation == "big" and argmax.size:
            argmax = argmax.copy()
            argmax.flat[-1] = 2**40
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
    attempt("conv2d_backward", (x, w, np.ones((1, 3) + output_hw(5, 5, (2, 2), stride, 0)), stride, 0), {})
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

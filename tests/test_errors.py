"""Bad input is rejected with a clear ValueError / TypeError / RuntimeError, never a crash.

* Layer-level checks: the message names the layer (e.g. ``Conv2d(``) and the offending shapes.
* A fuzz test of the compiled entry points through :mod:`nnscratch.ops` (cython backend),
  ``tests/fuzz_ops.py``: random, often absurd arguments; every call must either return a
  correctly shaped result (equal to the NumPy reference) or raise ValueError/TypeError. It runs
  in a subprocess so that a segfault fails the test instead of killing the session.
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
FUZZ_OPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_ops.py")


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
    if nn.backends._kernels is None:
        pytest.fail("nnscratch._kernels is not built: the fuzz test needs the cython backend", pytrace=False)
    log = tmp_path_factory.mktemp("fuzz") / "calls.log"
    code = (f"import runpy, sys; sys.argv = [{FUZZ_OPS!r}] + sys.argv[1:]; "
            f"runpy.run_path({FUZZ_OPS!r}, run_name='__main__')")
    result = run_python(code, log, FUZZ_EXAMPLES)
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

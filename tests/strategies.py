"""What several test files share, in one place: their random inputs, the checks of what the
examples write, running an example's ``main()`` in-process, and the kernel-equality tests'
tolerance check (``assert_close``), hypothesis settings and non-contiguous layouts.

The tests import it as a sibling module (``from strategies import random_images``): pytest puts
``tests/`` on ``sys.path``. Hypothesis strategies that more than one file draws from belong here.
"""
import contextlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st

import nnscratch
from nnscratch.data import DataLoader
from nnscratch.training import set_generator_state

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file


def compiled_kernels():
    """The compiled kernels :mod:`nnscratch._kernels`, or FAIL the test (never skip): the project's
    done-criteria require the cython backend to be active."""
    kernels = nnscratch.backends._kernels
    if kernels is None or "cython" not in nnscratch.backends._modules:
        error = getattr(nnscratch.backends, "_KERNELS_IMPORT_ERROR", "not registered as a backend")
        pytest.fail(
            "the compiled kernels nnscratch._kernels are not available, but the cython backend must be "
            f"active ({error}); build them with `python setup.py build_ext --inplace`",
            pytrace=False,
        )
    return kernels


def random_images(n, seed=0, channels=1, size=28, dtype=np.float32):
    """``n`` standard-normal "images" of shape (n, channels, size, size) drawn from ``default_rng(seed)``."""
    return np.random.default_rng(seed).standard_normal((n, channels, size, size)).astype(dtype)


def is_fraction(value):
    """An accuracy as the examples report it: a float in [0, 1]."""
    return isinstance(value, float) and 0.0 <= value <= 1.0


def load_example(name):
    """``examples/<name>.py`` as a module, without running it (call its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def library_rng_kept():
    """An example's ``main()`` reseeds the library-wide generator: give the tests that run after
    it their random stream back untouched."""
    state = nnscratch.rng.default_generator().bit_generator.state
    try:
        yield
    finally:
        nnscratch.manual_seed(0)
        set_generator_state(nnscratch.rng.default_generator(), state)


def pair(value):
    """A kernel_size/stride/padding as ``(height, width)``: an int means the same for both."""
    return (value, value) if isinstance(value, (int, np.integer)) else tuple(value)


def conv_arrays(case):
    """``(rng, x, weight, bias)`` of a convolution case (a dict with n, c, f, h, w, kernel, bias, dtype, seed), drawn
    from the case's seed."""
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(dt)
    weight = rng.standard_normal((case["f"], case["c"]) + case["kernel"]).astype(dt)
    bias = rng.standard_normal(case["f"]).astype(dt) if case["bias"] else None
    return rng, x, weight, bias


def output_hw(h, w, kernel, stride, padding):
    """Output height and width of a convolution or pooling window: ``(h + 2p - k) // s + 1`` per axis, by the
    one formula, :func:`nnscratch.reference.output_size`."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    return nnscratch.reference.output_size(h, kh, sh, ph), nnscratch.reference.output_size(w, kw, sw, pw)


def run_backward(net, x, target):
    """Forward `x`, the NLL loss against `target`, and the model's backward; returns ``∂L/∂x``."""
    criterion = nnscratch.NLLLoss()
    criterion(net(x), target)
    return net.backward(criterion.backward())


# the small transfer network of test_weight_files.py, test_freezing.py and test_transfer.py, and its helpers

TRANSFER_NET_PARAMS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                       "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def transfer_net(num_classes=5, hidden=16, seed=0):
    """The Keras transfer example's convnet made small (4 filters, `hidden` dense units), seeded by `seed`."""
    nnscratch.manual_seed(seed)
    return nnscratch.models.keras_transfer_net(num_classes=num_classes, filters=4, hidden=hidden)


def eval_output(model, x):
    """The model's output for `x` in eval mode (dropout off); the model is left in training mode."""
    model.eval()
    out = model(x)
    model.train()
    return out


def random_loader(n=32, num_classes=5, batch_size=8, seed=2):
    """A shuffled DataLoader of `n` random 1x28x28 images with random labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, num_classes, n)
    return DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed)


def params_copy(model):
    """``{name: copy of .data}`` of every parameter."""
    return {name: p.data.copy() for name, p in model.named_parameters()}


@contextlib.contextmanager
def num_threads(n):
    """Run a block with ``n`` compiled-kernel threads, then restore the previous count."""
    previous = nnscratch.get_num_threads()
    nnscratch.set_num_threads(n)
    try:
        yield
    finally:
        nnscratch.set_num_threads(previous)


# ----------------------------------------------------------------------------- kernel equality
# (tests/test_kernels_equal.py and tests/test_kernels_equal_pooling.py)

KERNEL_SETTINGS = dict(deadline=None, derandomize=True, database=None,  # hypothesis: the same examples every run
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
FLOAT_DTYPES = st.sampled_from([np.dtype(np.float64), np.dtype(np.float32)])


def assert_close(actual, expected, what=""):
    """Same shape and dtype; ``max|diff| <= rtol * max(1, max|expected|)``; NaNs in the same places."""
    assert actual is not None and expected is not None, what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs reference {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} vs reference {expected.dtype}"
    if expected.size == 0:
        return
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan), f"{what}: NaNs in different places"
    a, e = actual[~nan].astype(np.float64), expected[~nan].astype(np.float64)
    if e.size == 0:
        return
    inf = np.isinf(e)
    assert np.array_equal(a[inf], e[inf]), f"{what}: infinities differ"
    a, e = a[~inf], e[~inf]
    if e.size == 0:
        return
    scale = max(1.0, float(np.abs(e).max()))
    diff = float(np.abs(a - e).max())
    tol = RTOL[expected.dtype] * scale
    assert diff <= tol, f"{what}: max|diff| = {diff:.3e} > {tol:.3e} (scale {scale:.3g}, dtype {expected.dtype})"


def case_output_hw(case):
    """``(OH, OW)`` of a drawn convolution or pooling ``case``."""
    return output_hw(case["h"], case["w"], case["kernel"], case["stride"], case["padding"])


def noncontiguous(a, rng, how):
    """A non-C-contiguous array equal to ``a``."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        big[..., 1::2] = rng.standard_normal(a.shape)  # garbage in the gaps
        return big[..., ::2]
    if how == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if how == "transposed":  # stored NHWC, viewed NCHW
        if a.ndim != 4:
            return np.asfortranarray(a)
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    raise ValueError(how)


LAYOUTS = st.sampled_from(["fortran", "strided", "reversed", "transposed"])

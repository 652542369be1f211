"""What several test files share, in one place: their random inputs, the checks of what the
examples write, and running an example's ``main()`` in-process.

The tests import it as a sibling module (``from strategies import random_images``): pytest puts
``tests/`` on ``sys.path``. Hypothesis strategies that more than one file draws from belong here.
"""
import contextlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

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

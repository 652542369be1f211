"""Which algorithm computes a convolution: the direct method (im2col + GEMM) or Winograd's.

* ``"direct"``: :func:`nnscratch.backends.reference.conv2d_forward` (compiled: im2col + one GEMM per image);
* ``"winograd"``: F(4×4, 3×3), :mod:`nnscratch.backends.reference_winograd` (4× fewer multiplications,
  a float32 error 8-18× the direct method's on the seed's conv2: docs/fast_convolution.md);
* ``"winograd_2x2"``: F(2×2, 3×3) (2.25× fewer multiplications, the direct method's error);
* ``"auto"`` (the default): the rule of :func:`choose`, from the shapes alone (no timing), so that
  a given layer and input always run the same arithmetic.

Both Winograd variants take 3×3 kernels with stride 1 only (any padding). A layer or a call may
name its algorithm (``Conv2d(..., algorithm="direct")``; asking Winograd for another shape is an
error); :func:`set_conv_algorithm` or ``with use_conv_algorithm("direct"):`` choose what ``"auto"``
stands for everywhere, e.g. to compare the algorithms on a whole network. Set to a Winograd variant,
``"auto"`` uses it where the shape allows and the direct method elsewhere.
"""
import contextlib

from .reference_winograd import tile_grid

ALGORITHMS = ("auto", "direct", "winograd", "winograd_2x2")
TILE_SIZE = {"winograd": 4, "winograd_2x2": 2}  # m of F(m×m, 3×3)

# "auto" picks Winograd F(4×4, 3×3) for a 3×3 stride-1 convolution with at least AUTO_MIN_CHANNELS
# input channels and AUTO_MIN_TILES output tiles of 4×4 pixels in the batch: with fewer channels the
# transforms (per input and output channel) outweigh the saved products, with fewer tiles its small
# products and fixed costs do. Measured with the former benchmarks/bench_winograd.py (docs/fast_convolution.md,
# one thread, forward): the seed's conv1 (1 channel) runs 3.9× slower with Winograd, 8→16 channels
# 1.1-2× slower, 16→16 1.6× faster; the seed's conv2 on one image (36 tiles) 1.7× slower, on 64 images
# (2304 tiles) 1.7× faster.
AUTO_MIN_CHANNELS = 16
AUTO_MIN_TILES = 128

_auto = "auto"  # what "auto" stands for: the rule below, or an algorithm set by set_conv_algorithm


def check_algorithm(name, where):
    """``name`` if it is one of ``ALGORITHMS``, else a ``ValueError`` naming ``where``."""
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(f"{where}: algorithm must be one of {ALGORITHMS}, got {name!r}")
    return name


def winograd_supports(kernel_size, stride):
    """Whether Winograd F(m×m, 3×3) computes a convolution with this kernel size and stride."""
    return tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1)


def check_supported(name, kernel_size, stride, where):
    """A ``ValueError`` naming ``where`` if the algorithm ``name`` cannot compute this convolution."""
    if name in TILE_SIZE and not winograd_supports(kernel_size, stride):
        raise ValueError(
            f"{where}: algorithm {name!r} computes 3×3 convolutions with stride 1 only, got kernel_size "
            f"{tuple(kernel_size)} and stride {tuple(stride)}; use algorithm='auto' or 'direct'"
        )


def choose(name, input_shape, weight_shape, stride, padding, where="conv2d"):
    """The algorithm that computes a convolution of an ``input_shape`` (N, C, H, W) batch with
    ``weight_shape`` (F, C, KH, KW), ``stride`` and ``padding``: ``"direct"``, ``"winograd"`` or
    ``"winograd_2x2"``; ``name`` is the caller's request.

    ``"auto"``: what :func:`set_conv_algorithm` chose (where the shape allows it), otherwise
    ``"winograd"`` for a 3×3 stride-1 kernel over at least ``AUTO_MIN_CHANNELS`` input channels
    and ``AUTO_MIN_TILES`` tiles of 4×4 output pixels, ``"direct"`` for everything else."""
    check_algorithm(name, where)
    supported = winograd_supports(weight_shape[2:], stride)
    if name == "auto":
        if _auto != "auto":
            return _auto if supported or _auto == "direct" else "direct"
        if not supported or len(input_shape) != 4 or weight_shape[1] < AUTO_MIN_CHANNELS:
            return "direct"
        n, _, h, w = input_shape
        rows, cols = tile_grid(h + 2 * padding[0] - 2, w + 2 * padding[1] - 2, TILE_SIZE["winograd"])
        return "winograd" if n * rows * cols >= AUTO_MIN_TILES else "direct"
    check_supported(name, weight_shape[2:], stride, where)
    return name


def set_conv_algorithm(name):
    """What ``algorithm="auto"`` (every layer's default) stands for: ``"auto"`` (the rule of
    :func:`choose`), ``"direct"``, ``"winograd"`` or ``"winograd_2x2"`` (Winograd where the shape
    allows it, direct elsewhere). Layers that name their own algorithm keep it. Returns the previous."""
    global _auto
    previous, _auto = _auto, check_algorithm(name, "set_conv_algorithm")
    return previous


def get_conv_algorithm():
    """What ``algorithm="auto"`` stands for now (see :func:`set_conv_algorithm`)."""
    return _auto


@contextlib.contextmanager
def use_conv_algorithm(name):
    """Run a block with ``"auto"`` standing for ``name``: ``with use_conv_algorithm("direct"): net(x)``."""
    previous = set_conv_algorithm(name)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


"""Functional form of the hot operations: argument checks, then the active backend.

All validation happens here, in Python, before any compiled (GIL-free, unchecked) code
runs: ranks, channel counts, kernel versus padded input size, strides, paddings and
dtypes. A bad argument raises ``ValueError`` or ``TypeError`` whose message starts with
``where`` (the layer, e.g. ``Conv2d(1, 32, kernel_size=(3, 3))``) and names the shapes.

The formulas themselves are documented in :mod:`nnscratch.backends.reference`. Where the compiled
backend has no twin -- softmax and log-softmax, the losses' forward and backward, the dense
layer's bias gradient -- the functions here call :mod:`nnscratch.backends.reference` whichever backend is active.
"""
import numbers

import numpy as np

from . import backends
from .backends import conv_algorithm, reference

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


MAX_INT = 2**31 - 1  # the kernels take kernel sizes, strides and paddings as C ints
BLAS_MAX_SIZE = 2**31 - 1  # the compiled kernels' BLAS (scipy's cython_blas) takes every size as a C int


def pair(value, name, where, minimum):
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``; checks both are integers in ``[minimum, 2³¹ - 1]``."""
    # the usual cases (an int, a layer's own pair of ints), checked before the general path
    if type(value) is int and minimum <= value <= MAX_INT:
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and minimum <= min(value) and max(value) <= MAX_INT:
        return value
    items = (value, value) if isinstance(value, numbers.Integral) else tuple(value) if isinstance(value, (tuple, list)) else None
    if (
        items is None
        or len(items) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items)
    ):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    if max(items) > MAX_INT:
        raise ValueError(f"{where}: {name} must be at most {MAX_INT}, got {value!r}")
    return int(items[0]), int(items[1])


def check_float_array(x, where, ndim=None, what="input", layout=None):
    """Return ``x`` as a C-contiguous float32/float64 array, or raise naming ``where``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: {what} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{where}: {what} must be float32 or float64, got {x.dtype} of shape {x.shape}"
            + (" (convert images with nnscratch.data.prepare_images)" if x.dtype.kind in "iub" else "")
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{where}: expected a {ndim}-D {what}" + (f" {layout}" if layout else "") + f", got shape {x.shape}"
        )
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (ascontiguousarray makes 0-d arrays 1-d)


def check_grad_output(grad_y, expected_shape, where, dtype=None):
    """``grad_y`` (the gradient ``∂L/∂y`` handed to a backward) must be a float array of the forward
    output's shape; cast to ``dtype`` when given. The one check of ``grad_output``: layers call it too."""
    grad_y = check_float_array(grad_y, where, what="grad_output")
    if grad_y.shape != tuple(expected_shape):
        raise ValueError(f"{where}: grad_output has shape {grad_y.shape}, but the output had shape {tuple(expected_shape)}")
    return grad_y if dtype is None else grad_y.astype(dtype, copy=False)


def _check_bias(bias, weight, dtype, where):
    """``None``, or a 1-D float array with one entry per output channel/feature, cast to ``dtype``."""
    if bias is None:
        return None
    bias = check_float_array(bias, where, ndim=1, what="bias").astype(dtype, copy=False)
    if bias.shape[0] != weight.shape[0]:
        raise ValueError(f"{where}: bias shape {bias.shape} does not match weight shape {weight.shape}")
    return bias


def window_output_size(input_shape, kernel, stride, padding, where):
    """Output (OH, OW) of a sliding window over an NCHW input, or a clear error if none fits."""
    h, w = input_shape[2:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"{where}: kernel {kernel} is larger than the padded input {(h + 2 * ph, w + 2 * pw)} "
            f"(input shape {tuple(input_shape)}, padding {padding})"
        )
    return reference.output_size(h, kh, sh, ph), reference.output_size(w, kw, sw, pw)


def check_blas_sizes(where, sizes, hint):
    """With the compiled backend, every matrix size handed to BLAS (its ``int`` arguments M, N, K and
    the leading dimensions, which are among the same sizes) must be at most ``BLAS_MAX_SIZE``;
    ``sizes`` maps a description to its value. Beyond it, a C int would wrap around. The NumPy
    reference has no such limit."""
    if backends.backend() != "cython":
        return
    for name, size in sizes.items():
        if size > BLAS_MAX_SIZE:
            raise ValueError(
                f"{where}: {name} is {size}, more than the compiled kernels' BLAS takes ({BLAS_MAX_SIZE}, "
                f"the largest C int); {hint}, or use the NumPy backend: nnscratch.set_backend('numpy')"
            )


# ----------------------------------------------------------------------------- ReLU

def relu(x, where="relu"):
    """``max(x, 0)`` element-wise: see :func:`nnscratch.backends.reference.relu_forward`."""
    return backends.kernels().relu_forward(check_float_array(x, where))


def relu_backward(y, grad_y, where="relu"):
    """``∂L/∂y · [y > 0]`` from the forward output ``y``: see :func:`nnscratch.backends.reference.relu_backward`."""
    y = check_float_array(y, where, what="output")
    grad_y = check_grad_output(grad_y, y.shape, where, y.dtype)
    return backends.kernels().relu_backward(y, grad_y)


# ----------------------------------------------------------------------------- dropout

def _check_dropout(p, key, where):
    if not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"{where}: p must be a number in [0, 1), got {p!r}")
    if not isinstance(key, numbers.Integral) or isinstance(key, bool) or not 0 <= key < 2**64:
        raise ValueError(f"{where}: key must be an int in [0, 2**64), got {key!r}")
    return float(p), int(key)


def dropout(x, p, key, where="dropout"):
    """``x · m / (1 - p)`` with the keep mask drawn from ``key``: see :func:`nnscratch.backends.reference.dropout_forward`."""
    x = check_float_array(x, where)
    p, key = _check_dropout(p, key, where)
    return backends.kernels().dropout_forward(x, p, key)


def dropout_backward(grad_y, p, key, output_shape, where="dropout"):
    """``∂L/∂y · m / (1 - p)``, the forward's mask recomputed from ``key``: see
    :func:`nnscratch.backends.reference.dropout_backward`."""
    grad_y = check_grad_output(grad_y, output_shape, where)
    p, key = _check_dropout(p, key, where)
    return backends.kernels().dropout_backward(grad_y, p, key)


# ----------------------------------------------------------------------------- dense

def _check_linear(x, weight, where):
    x = check_float_array(x, where, ndim=2, layout="(N, in_features)")
    weight = check_float_array(weight, where, ndim=2, what="weight", layout="(out_features, in_features)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{where}: input has {x.shape[1]} features (shape {x.shape}) but the layer expects "
            f"{weight.shape[1]} (weight shape {weight.shape})"
        )
    check_blas_sizes(where, {"the batch size (rows of the matrix product)": x.shape[0],
                             "in_features": weight.shape[1], "out_features": weight.shape[0]},
                     "pass the batch in smaller pieces")
    return x, weight.astype(x.dtype, copy=False)


def linear(x, weight, bias=None, where="linear"):
    """``y = x Wᵀ + b``: see :func:`nnscratch.backends.reference.linear_forward`."""
    x, weight = _check_linear(x, weight, where)
    bias = _check_bias(bias, weight, x.dtype, where)
    with backends.kernel_blas():
        return backends.kernels().linear_forward(x, weight, bias)


def linear_backward(x, weight, grad_y, need_input_grad=True, need_weight_grad=True, where="linear"):
    """``(grad_x, grad_weight)``, each ``None`` when not needed: see :func:`nnscratch.backends.reference.linear_backward`."""
    x, weight = _check_linear(x, weight, where)
    grad_y = check_grad_output(grad_y, (x.shape[0], weight.shape[0]), where, x.dtype)
    with backends.kernel_blas():
        return backends.kernels().linear_backward(x, weight, grad_y, need_input_grad, need_weight_grad)


def linear_bias_backward(grad_y, where="linear"):
    """``∂L/∂b = Σ_n ∂L/∂y[n]`` for ``grad_y`` (N, out_features), summed in ``grad_y``'s dtype: see
    :func:`nnscratch.backends.reference.linear_bias_backward` (no compiled twin: the reference runs for both backends)."""
    return reference.linear_bias_backward(check_float_array(grad_y, where, ndim=2, what="grad_output"))


# ----------------------------------------------------------------------------- convolution

def _check_conv(x, weight, bias, stride, padding, where):
    x = check_float_array(x, where, ndim=4, layout="(N, C, H, W)")
    weight = check_float_array(weight, where, ndim=4, what="weight", layout="(F, C, KH, KW)").astype(x.dtype, copy=False)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{where}: input has {x.shape[1]} channels (shape {x.shape}) but the weight expects "
            f"{weight.shape[1]} (weight shape {weight.shape})"
        )
    bias = _check_bias(bias, weight, x.dtype, where)
    stride = pair(stride, "stride", where, 1)
    padding = pair(padding, "padding", where, 0)
    out_hw = window_output_size(x.shape, weight.shape[2:], stride, padding, where)
    f, c, kh, kw = weight.shape
    check_blas_sizes(where, {"the output plane OH*OW": out_hw[0] * out_hw[1], "C*KH*KW": c * kh * kw,
                             "the number of filters": f}, "use a smaller image, a larger stride or a smaller kernel")
    return x, weight, bias, stride, padding, out_hw


def conv2d(x, weight, bias=None, stride=1, padding=0, where="conv2d", algorithm="auto"):
    """2-D convolution of an NCHW batch: see :func:`nnscratch.backends.reference.conv2d_forward`, computed by
    ``algorithm`` (:mod:`nnscratch.backends.conv_algorithm`: ``"auto"``, ``"direct"``, ``"winograd"``, ``"winograd_2x2"``)."""
    x, weight, bias, stride, padding, _ = _check_conv(x, weight, bias, stride, padding, where)
    algorithm = conv_algorithm.choose(algorithm, x.shape, weight.shape, stride, padding, where)
    with backends.kernel_blas():
        if algorithm == "direct":
            return backends.kernels().conv2d_forward(x, weight, bias, stride, padding)
        return backends.kernels().winograd_conv2d_forward(x, weight, bias, padding, conv_algorithm.TILE_SIZE[algorithm])


def conv2d_backward(x, weight, grad_y, stride=1, padding=0, need_input_grad=True, need_weight_grad=True, where="conv2d",
                    algorithm="auto"):
    """``(grad_x, grad_weight)``, each ``None`` when not needed: see :func:`nnscratch.backends.reference.conv2d_backward`
    (``algorithm`` as for :func:`conv2d`)."""
    x, weight, _, stride, padding, out_hw = _check_conv(x, weight, None, stride, padding, where)
    grad_y = check_grad_output(grad_y, (x.shape[0], weight.shape[0]) + out_hw, where, x.dtype)
    algorithm = conv_algorithm.choose(algorithm, x.shape, weight.shape, stride, padding, where)
    with backends.kernel_blas():
        if algorithm == "direct":
            return backends.kernels().conv2d_backward(x, weight, grad_y, stride, padding, need_input_grad, need_weight_grad)
        return backends.kernels().winograd_conv2d_backward(x, weight, grad_y, padding, need_input_grad, need_weight_grad,
                                                          conv_algorithm.TILE_SIZE[algorithm])


def conv2d_bias_backward(grad_y, where="conv2d"):
    """``∂L/∂b[f] = Σ_{n,i,j} ∂L/∂y[n,f,i,j]`` for an NCHW ``grad_y``, returned in its dtype: see
    :func:`nnscratch.backends.reference.conv2d_bias_backward`."""
    return backends.kernels().conv2d_bias_backward(check_float_array(grad_y, where, ndim=4, what="grad_output"))


# ----------------------------------------------------------------------------- softmax, log-softmax
# (no compiled twins: the reference runs for both backends)

def _check_along_dim(x, dim, where):
    x = check_float_array(x, where)
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{where}: dim {dim} is out of range for an input of shape {x.shape}")
    return x


def softmax(x, dim=1, where="softmax"):
    """``exp(x_k - m) / Σ_j exp(x_j - m)`` along ``dim``: see :func:`nnscratch.backends.reference.softmax_forward`."""
    return reference.softmax_forward(_check_along_dim(x, dim, where), dim)


def softmax_backward(y, grad_y, dim=1, where="softmax"):
    """``y_k (g_k - Σ_j g_j y_j)`` from the output ``y``: see :func:`nnscratch.backends.reference.softmax_backward`."""
    y = _check_along_dim(y, dim, where)
    return reference.softmax_backward(y, check_grad_output(grad_y, y.shape, where), dim)


def log_softmax(x, dim=1, where="log_softmax"):
    """``x_k - log Σ_j exp(x_j)`` along ``dim``: see :func:`nnscratch.backends.reference.log_softmax_forward`."""
    return reference.log_softmax_forward(_check_along_dim(x, dim, where), dim)


def log_softmax_backward(y, grad_y, dim=1, where="log_softmax"):
    """``g_k - exp(y_k) Σ_j g_j`` from the output ``y``: see :func:`nnscratch.backends.reference.log_softmax_backward`."""
    y = _check_along_dim(y, dim, where)
    return reference.log_softmax_backward(y, check_grad_output(grad_y, y.shape, where), dim)


# ----------------------------------------------------------------------------- pooling

def pool_geometry(input_shape, kernel, stride, padding, where):
    """Validate pooling hyper-parameters for an NCHW ``input_shape``; ``stride=None`` means ``stride = kernel``
    (PyTorch's default). Returns ``(kernel, stride, padding, (OH, OW))``."""
    kernel = pair(kernel, "kernel_size", where, 1)
    stride = kernel if stride is None else pair(stride, "stride", where, 1)
    padding = pair(padding, "padding", where, 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{where}: padding {padding} must be at most half of kernel_size {kernel}")
    if input_shape[2] == 0 or input_shape[3] == 0:
        raise ValueError(f"{where}: cannot pool an empty {input_shape[2]}x{input_shape[3]} plane "
                         f"(input shape {tuple(input_shape)})")
    return kernel, stride, padding, window_output_size(input_shape, kernel, stride, padding, where)


def max_pool2d(x, kernel_size, stride=None, padding=0, where="max_pool2d"):
    """``(y, argmax)``: see :func:`nnscratch.backends.reference.maxpool2d_forward`."""
    x = check_float_array(x, where, ndim=4, layout="(N, C, H, W)")
    kernel, stride, padding, _ = pool_geometry(x.shape, kernel_size, stride, padding, where)
    return backends.kernels().maxpool2d_forward(x, kernel, stride, padding)


def max_pool2d_backward(grad_y, argmax, input_shape, where="max_pool2d"):
    """Route each output gradient to its window's winner: see :func:`nnscratch.backends.reference.maxpool2d_backward`."""
    input_shape = tuple(int(s) for s in input_shape)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64:
        raise TypeError(f"{where}: argmax must be the int64 array returned by the forward pass")
    grad_y = check_grad_output(grad_y, argmax.shape, where)
    if len(input_shape) != 4 or argmax.shape[:2] != input_shape[:2]:
        raise ValueError(f"{where}: argmax shape {argmax.shape} does not fit input shape {input_shape}")
    try:  # each backend checks the indices as it scatters
        return backends.kernels().maxpool2d_backward(grad_y, np.ascontiguousarray(argmax), input_shape)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def avg_pool2d(x, kernel_size, stride=None, padding=0, where="avg_pool2d"):
    """Average pooling: see :func:`nnscratch.backends.reference.avgpool2d_forward`."""
    x = check_float_array(x, where, ndim=4, layout="(N, C, H, W)")
    kernel, stride, padding, _ = pool_geometry(x.shape, kernel_size, stride, padding, where)
    return backends.kernels().avgpool2d_forward(x, kernel, stride, padding)


def avg_pool2d_backward(grad_y, input_shape, kernel_size, stride=None, padding=0, where="avg_pool2d"):
    """Spread each output gradient over its window: see :func:`nnscratch.backends.reference.avgpool2d_backward`."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"{where}: input_shape must be (N, C, H, W), got {input_shape}")
    kernel, stride, padding, out_hw = pool_geometry(input_shape, kernel_size, stride, padding, where)
    grad_y = check_grad_output(grad_y, input_shape[:2] + out_hw, where)
    return backends.kernels().avgpool2d_backward(grad_y, input_shape, kernel, stride, padding)


# ----------------------------------------------------------------------------- SGD update

def sgd_update(param, grad, buffer, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
               first=False, where="SGD"):
    """One in-place SGD step on the array ``param`` (and its momentum ``buffer``, or ``None``): see
    :func:`nnscratch.backends.reference.sgd_update`. ``param`` and ``buffer`` must be C-contiguous and
    writeable, of the same shape and float dtype; ``grad`` is cast to that dtype."""
    if not isinstance(param, np.ndarray) or param.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: the parameter must be a float32 or float64 numpy array, got "
                        f"{getattr(param, 'dtype', type(param).__name__)}")
    if not (param.flags.c_contiguous and param.flags.writeable):
        raise ValueError(f"{where}: the parameter of shape {param.shape} must be C-contiguous and writeable "
                         "(it is updated in place)")
    grad = check_float_array(grad, where, what="gradient")
    if grad.shape != param.shape:
        raise ValueError(f"{where}: gradient of shape {grad.shape} for a parameter of shape {param.shape}")
    grad = grad.astype(param.dtype, copy=False)
    if buffer is not None and (not isinstance(buffer, np.ndarray) or buffer.shape != param.shape
                               or buffer.dtype != param.dtype or not buffer.flags.c_contiguous
                               or not buffer.flags.writeable):
        raise ValueError(f"{where}: the momentum buffer must be a writeable C-contiguous {param.dtype} array "
                         f"of the parameter's shape {param.shape}")
    backends.kernels().sgd_update(param, grad, buffer, float(lr), float(momentum), float(dampening),
                                  float(weight_decay), bool(nesterov), bool(first))


# ----------------------------------------------------------------------------- losses
# (no compiled twins: the reference runs for both backends). ``scale`` is 1/N for the mean, 1 for the sum.

def check_labels(input, target, where):
    """``input`` (N, C) floats and ``target`` (N,) integer class labels in ``[0, C)``; returns
    ``(input, target as int64)``, the arguments of the cross-entropy and NLL functions below."""
    input = check_float_array(input, where, ndim=2, layout="(N, classes)")
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{where}: target must hold integer class labels, got dtype {target.dtype}")
    if target.shape != (input.shape[0],):
        raise ValueError(f"{where}: target has shape {target.shape}, expected ({input.shape[0]},) "
                         f"for input of shape {input.shape}")
    if target.size and (target.min() < 0 or target.max() >= input.shape[1]):
        raise ValueError(
            f"{where}: target labels must lie in [0, {input.shape[1]}), got min {target.min()} and max {target.max()}"
        )
    return input, target.astype(np.int64)


def check_regression_target(input, target, where):
    """``input`` a float array and ``target`` an array of its shape; returns ``(input, target in input's dtype)``,
    the arguments of :func:`mse` and :func:`mse_backward`."""
    input = check_float_array(input, where)
    target = np.asarray(target)
    if target.shape != input.shape:
        raise ValueError(f"{where}: target has shape {target.shape} but input has shape {input.shape}")
    return input, target.astype(input.dtype, copy=False)


# The losses' formulas have no compiled twin (they cost little next to a convolution): the losses call
# the reference's forward and backward under these names, whichever backend is active.
cross_entropy, cross_entropy_backward = reference.cross_entropy_forward, reference.cross_entropy_backward
nll, nll_backward = reference.nll_forward, reference.nll_backward
mse, mse_backward = reference.mse_forward, reference.mse_backward

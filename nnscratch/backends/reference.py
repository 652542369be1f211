"""The NumPy reference backend: every operation of the network, written as its formula.

These functions are the definition of correctness in nnscratch. The compiled kernels in
``nnscratch/_kernels.pyx`` have the same signatures and are tested equal to them; the
layers call whichever backend is active through :mod:`nnscratch.ops`, which validates
the arguments first. Here every argument is assumed valid: C-contiguous float32 or
float64 arrays of matching dtype, ``stride`` and ``padding`` as ``(vertical, horizontal)``
pairs.

Shapes: inputs are NCHW, ``x[n, c, i, j]``; a convolution weight is ``w[f, c, p, q]``.
With zero padding ``P`` and stride ``S`` the output height is ``(H + 2 P_h - K_h) // S_h + 1``
(likewise the width).

The loops below run over kernel offsets ``(p, q)`` only, never over pixels: each offset
touches a whole strided slice of the batch at once.

Softmax, log-softmax and the losses are in :mod:`nnscratch.backends.reference_losses`, re-exported here.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .reference_losses import (  # noqa: F401  (re-exported: every formula is reference.<name>)
    cross_entropy_backward, cross_entropy_forward, log_softmax_backward, log_softmax_forward, mse_backward,
    mse_forward, nll_backward, nll_forward, softmax_backward, softmax_forward,
)
from .reference_winograd import (  # noqa: F401  (re-exported: the backend contract names them so)
    conv2d_backward as winograd_conv2d_backward, conv2d_forward as winograd_conv2d_forward,
)


def output_size(size, kernel, stride, padding):
    """Output length along one axis: ``(size + 2 padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, padding, value=0.0):
    """Pad the two spatial axes of an NCHW array by ``padding = (ph, pw)`` with ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(x_padded, kernel, stride):
    """All pooling/convolution windows as a read-only view of shape (N, C, OH, OW, KH, KW).

    ``windows[n, c, i, j, p, q] = x_padded[n, c, i*S_h + p, j*S_w + q]``: no data is copied.
    """
    sh, sw = stride
    return sliding_window_view(x_padded, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def _offset_slice(p, q, out_hw, stride):
    """Index of the input pixels that kernel offset (p, q) touches, one per output pixel:
    rows ``p, p + S_h, ..., p + S_h (OH - 1)`` and the same for columns."""
    (oh, ow), (sh, sw) = out_hw, stride
    return (slice(None), slice(None), slice(p, p + sh * (oh - 1) + 1, sh), slice(q, q + sw * (ow - 1) + 1, sw))


def _unpad(x_padded, padding):
    ph, pw = padding
    h, w = x_padded.shape[2:]
    return x_padded[:, :, ph:h - ph, pw:w - pw]


# ----------------------------------------------------------------------------- ReLU

def relu_forward(x):
    """Rectified linear unit, element-wise: ``y = max(x, 0)`` (a NaN stays NaN).

    (``np.asarray`` here and below: on a 0-d array a ufunc returns a NumPy scalar, and layers pass arrays.)"""
    return np.asarray(np.maximum(x, 0))


def relu_backward(y, grad_y):
    """Gradient of :func:`relu_forward` from its output: ``∂L/∂x = ∂L/∂y · [y > 0]``
    (``y > 0`` exactly where ``x > 0``; the gradient at 0 is taken as 0, as PyTorch does).
    It is a product, so a non-finite upstream gradient stays non-finite where the unit is off."""
    return np.asarray(grad_y * (y > 0))


# ----------------------------------------------------------------------------- dropout

SPLITMIX64_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2⁶⁴ / golden ratio, odd
SPLITMIX64_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def dropout_keep_mask(key, size, p):
    """Dropout's keep mask ``m``, ``size`` draws of Bernoulli(1 - p) from a 64-bit ``key``.

    Element ``i`` is kept when ``u_i ≥ p``, where ``u_i ∈ [0, 1)`` is the top 32 bits (over 2³²)
    of ``splitmix64(key + (i + 1) γ)``: the counter-based generator of Steele, Lea & Flood (2014),
    which mixes the i-th point of a Weyl sequence (``γ`` = ``SPLITMIX64_GAMMA``) with two
    multiply-xorshift rounds, in wrapping 64-bit arithmetic. Every element is a pure function of
    ``(key, i)``: the backward pass recomputes the mask instead of storing it, and threads can
    draw any part of it with the same result (PyTorch's GPU dropout uses the counter-based Philox
    for the same reasons). ``P(keep) = 1 - round(p · 2³²) / 2³²``.
    """
    mix1, mix2 = (np.uint64(m) for m in SPLITMIX64_MIX)
    z = np.uint64(key) + np.arange(1, size + 1, dtype=np.uint64) * np.uint64(SPLITMIX64_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * mix1
    z = (z ^ (z >> np.uint64(27))) * mix2
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(32)) >= np.uint64(dropout_threshold(p))


def dropout_threshold(p):
    """``round(p · 2³²)``: ``u_i ≥ p`` compared as 32-bit integers."""
    return round(p * 2**32)


def dropout_forward(x, p, key):
    """Inverted dropout: ``y = x · m / (1 - p)`` with ``m = dropout_keep_mask(key, x.size, p)``
    laid out like ``x`` (C order); the expectation of ``y`` is ``x``."""
    keep = dropout_keep_mask(key, x.size, p).reshape(x.shape)
    return np.asarray(x * np.where(keep, x.dtype.type(1 / (1 - p)), x.dtype.type(0)))


def dropout_backward(grad_y, p, key):
    """``∂L/∂x = ∂L/∂y · m / (1 - p)``: the same mask, recomputed from ``key``. It is the forward
    formula applied to the gradient."""
    return dropout_forward(grad_y, p, key)


# ----------------------------------------------------------------------------- dense (fully connected)

def linear_forward(x, weight, bias):
    """Fully connected layer: ``y[n, o] = b[o] + Σ_i x[n, i] W[o, i]``, i.e. ``y = x Wᵀ + b``.

    ``x`` (N, in), ``weight`` (out, in) as PyTorch's ``Linear``, ``bias`` (out,) or None.
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(x, weight, grad_y, need_input_grad=True, need_weight_grad=True):
    """Gradients of :func:`linear_forward`: ``∂L/∂x = (∂L/∂y) W`` and ``∂L/∂W = (∂L/∂y)ᵀ x``
    (from ``∂y[n,o]/∂x[n,i] = W[o,i]`` and ``∂y[n,o]/∂W[o,i] = x[n,i]``). The bias gradient is
    :func:`linear_bias_backward`. Returns ``(grad_x, grad_weight)``, each ``None`` when not asked for."""
    grad_x = grad_y @ weight if need_input_grad else None
    grad_weight = grad_y.T @ x if need_weight_grad else None
    return grad_x, grad_weight


def linear_bias_backward(grad_y):
    """Bias gradient of :func:`linear_forward`: ``∂y[n,o]/∂b[o] = 1``, so ``∂L/∂b[o] = Σ_n ∂L/∂y[n, o]``."""
    return grad_y.sum(axis=0)


# ----------------------------------------------------------------------------- convolution

def conv2d_forward(x, weight, bias, stride, padding):
    """2-D convolution (cross-correlation, as in every deep-learning library), seed 3.3.1.

    .. math::
        y[n, f, i, j] = b[f] + \\sum_c \\sum_{p=0}^{K_h-1} \\sum_{q=0}^{K_w-1}
                        x_{pad}[n, c, i S_h + p, j S_w + q] \\; w[f, c, p, q]

    which, for one channel, stride 1 and no bias, is the seed's
    ``y(i,j) = Σ_p Σ_q x(i+p, j+q)·k(p,q)``.

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    weight : ndarray (F, C, K_h, K_w)
    bias : ndarray (F,) or None
    stride, padding : (int, int)

    Returns
    -------
    y : ndarray (N, F, OH, OW)
    """
    windows = _windows(_pad(x, padding), weight.shape[2:], stride)
    y = np.einsum("nchwpq,fcpq->nfhw", windows, weight, optimize=True)
    if bias is not None:
        y += bias[None, :, None, None]
    return np.ascontiguousarray(y)


def conv2d_backward(x, weight, grad_y, stride, padding, need_input_grad=True, need_weight_grad=True):
    """Gradients of :func:`conv2d_forward` given ``grad_y = ∂L/∂y``.

    Differentiating ``y[n,f,i,j] = Σ_{c,p,q} x_pad[n,c,iS_h+p,jS_w+q] w[f,c,p,q]``:

    .. math::
        \\frac{∂L}{∂w[f,c,p,q]} = \\sum_{n,i,j} \\frac{∂L}{∂y[n,f,i,j]} \\, x_{pad}[n,c,iS_h+p,jS_w+q]

        \\frac{∂L}{∂x_{pad}[n,c,iS_h+p,jS_w+q]} \\mathrel{+}= \\sum_f \\frac{∂L}{∂y[n,f,i,j]} \\, w[f,c,p,q]

    (an input pixel receives a contribution from every window that contains it), and
    ``∂L/∂x`` is ``∂L/∂x_pad`` with the padding cut away. The bias gradient is
    :func:`conv2d_bias_backward`.

    Returns
    -------
    (grad_x, grad_weight), each ``None`` when not asked for.
    """
    x_padded = _pad(x, padding)
    grad_weight = None
    if need_weight_grad:
        windows = _windows(x_padded, weight.shape[2:], stride)
        grad_weight = np.ascontiguousarray(np.einsum("nchwpq,nfhw->fcpq", windows, grad_y, optimize=True))
    if not need_input_grad:
        return None, grad_weight
    grad_x_padded = np.zeros_like(x_padded)
    kh, kw = weight.shape[2:]
    for p in range(kh):
        for q in range(kw):
            contribution = np.einsum("nfhw,fc->nchw", grad_y, weight[:, :, p, q], optimize=True)
            grad_x_padded[_offset_slice(p, q, grad_y.shape[2:], stride)] += contribution
    return np.ascontiguousarray(_unpad(grad_x_padded, padding)), grad_weight


def conv2d_bias_backward(grad_y):
    """Bias gradient of :func:`conv2d_forward`: ``b[f]`` is added to every output pixel of map ``f``,
    so ``∂L/∂b[f] = Σ_{n,i,j} ∂L/∂y[n, f, i, j]``."""
    return grad_y.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------- max pooling

def maxpool2d_forward(x, kernel, stride, padding):
    """Max pooling, seed 3.3.2: ``y[n,c,i,j] = max_{p,q} x_pad[n, c, i S_h + p, j S_w + q]``.

    Padding is by ``-inf`` so that it never wins. Tie rule: when several pixels of a
    window hold the maximum, the first in row-major window order (smallest ``p``, then
    smallest ``q``) is the one recorded, and only it receives the gradient (as PyTorch
    does). A NaN in a window wins (NaN propagates).

    Returns
    -------
    y : ndarray (N, C, OH, OW)
    argmax : int64 ndarray (N, C, OH, OW)
        For every output, the flat index ``h * W + w`` of the winning pixel in its
        (unpadded) ``H × W`` input plane, as PyTorch's ``return_indices=True``.
    """
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    windows = _windows(_pad(x, padding, -np.inf), kernel, stride)
    oh, ow = windows.shape[2:4]
    flat = windows.reshape(n, c, oh, ow, kh * kw)
    best = np.argmax(flat, axis=-1)  # first maximum; NaN counts as the maximum
    # A padding cell can only "win" a window whose real pixels are all -inf: the first real pixel
    # is then the first maximum.
    inside = _windows(_pad(np.ones((1, 1, h, w), dtype=bool), padding, False), kernel, stride)
    inside = inside.reshape(1, 1, oh, ow, kh * kw)
    won_by_padding = ~np.take_along_axis(inside, best[..., None], axis=-1)[..., 0]
    best = np.where(won_by_padding, np.argmax(inside, axis=-1), best)
    y = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    # window offset (p, q) of the winner -> row and column in the unpadded input
    rows = np.arange(oh)[:, None] * stride[0] + best // kw - ph
    cols = np.arange(ow)[None, :] * stride[1] + best % kw - pw
    return np.ascontiguousarray(y), (rows * w + cols).astype(np.int64)


def argmax_outside_message(h, w):
    """What both backends' max-pool backward say of an ``argmax`` that points outside the input plane."""
    return f"argmax holds indices outside the {h}x{w} input plane"


def maxpool2d_backward(grad_y, argmax, input_shape):
    """Gradient of max pooling: each output's gradient goes to the pixel that won its window.

    .. math::
        \\frac{∂L}{∂x[n,c,k]} = \\sum_{(i,j):\\ argmax[n,c,i,j] = k} \\frac{∂L}{∂y[n,c,i,j]}

    Overlapping windows that share a winner accumulate (``np.add.at`` sums repeated indices).
    An index outside the ``h × w`` plane raises ``ValueError`` (:func:`argmax_outside_message`).
    """
    n, c, h, w = input_shape
    if argmax.size and (argmax.min() < 0 or argmax.max() >= h * w):
        raise ValueError(argmax_outside_message(h, w))
    grad_x = np.zeros((n * c, h * w), dtype=grad_y.dtype)
    planes = np.arange(n * c)[:, None]
    outputs = argmax.shape[2] * argmax.shape[3]
    np.add.at(grad_x, (planes, argmax.reshape(n * c, outputs)), grad_y.reshape(n * c, outputs))
    return grad_x.reshape(input_shape)


# ----------------------------------------------------------------------------- average pooling

def avgpool2d_forward(x, kernel, stride, padding):
    """Average pooling, seed 3.3.2: ``y[n,c,i,j] = 1/(K_h K_w) Σ_{p,q} x_pad[n, c, i S_h + p, j S_w + q]``.

    Zero padding counts in the denominator (PyTorch's default ``count_include_pad=True``).
    """
    windows = _windows(_pad(x, padding), kernel, stride)
    return np.ascontiguousarray(windows.mean(axis=(4, 5), dtype=x.dtype))


def avgpool2d_backward(grad_y, input_shape, kernel, stride, padding):
    """Gradient of average pooling: every pixel of a window receives ``∂L/∂y / (K_h K_w)``.

    .. math::
        \\frac{∂L}{∂x_{pad}[n,c,iS_h+p,jS_w+q]} \\mathrel{+}= \\frac{1}{K_h K_w} \\frac{∂L}{∂y[n,c,i,j]}
    """
    n, c, h, w = input_shape
    (kh, kw), (ph, pw) = kernel, padding
    grad_x_padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_y.dtype)
    share = grad_y / (kh * kw)
    for p in range(kh):
        for q in range(kw):
            grad_x_padded[_offset_slice(p, q, grad_y.shape[2:], stride)] += share
    return np.ascontiguousarray(_unpad(grad_x_padded, padding))


# ----------------------------------------------------------------------------- SGD update

def sgd_update(param, grad, buffer, lr, momentum, dampening, weight_decay, nesterov, first):
    """One step of gradient descent on one parameter, in place (seed 3.3.4, with PyTorch's momentum):

    .. math::
        g &\\leftarrow g + λ θ                         &&\\text{(weight decay λ)} \\\\
        b &\\leftarrow g \\text{ at the first step, else } μ b + (1 - τ) g  &&\\text{(momentum μ, dampening τ)} \\\\
        g &\\leftarrow g + μ b \\text{ (Nesterov) or } b \\\\
        θ &\\leftarrow θ - η g

    ``param`` θ and the momentum ``buffer`` b (``None`` without momentum) are updated in place; the
    scalars are used in the parameter's dtype. Without momentum it is the seed's ``θ ← θ - η ∇L(θ)``.
    """
    t = param.dtype.type
    if weight_decay:
        grad = grad + t(weight_decay) * param
    if buffer is not None:
        if first:
            buffer[...] = grad
        else:
            buffer *= t(momentum)
            buffer += t(1 - dampening) * grad if dampening else grad
        grad = grad + t(momentum) * buffer if nesterov else buffer
    param -= t(lr) * grad

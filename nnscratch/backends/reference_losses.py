"""The NumPy reference of the normalizing activations and of the losses (seed 3.3.3), written as
their formulas; :mod:`nnscratch.backends.reference` re-exports every name, so ``reference.softmax_forward``
works. The compiled backend has no twin of these: :mod:`nnscratch.ops` calls them for both backends.

As in :mod:`nnscratch.backends.reference`, every argument is assumed valid (``ops`` checks them first):
float32 or float64 arrays, integer labels ``target`` (N,) in ``[0, C)``. ``scale`` is the loss's
reduction factor: ``1/N`` for the mean (``1/n``, the number of elements, for MSE), ``1`` for the sum.
The losses' forward returns a NumPy scalar of the input's dtype; their backward returns ``∂L/∂input``.
"""
import numpy as np


# ----------------------------------------------------------------------------- softmax, log-softmax

def softmax_forward(x, dim):
    """Softmax along axis ``dim``: ``y_k = exp(x_k - m) / Σ_j exp(x_j - m)`` with ``m = max_j x_j``
    (equal to ``exp(x_k) / Σ_j exp(x_j)``; subtracting ``m`` keeps every exponential ≤ 1)."""
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward(y, grad_y, dim):
    """Gradient of :func:`softmax_forward` from its output ``y``, with ``g = ∂L/∂y``:
    ``∂y_k/∂x_j = y_k (δ_kj - y_j)``, so ``∂L/∂x_j = Σ_k g_k y_k (δ_kj - y_j) = y_j (g_j - Σ_k g_k y_k)``."""
    return y * (grad_y - (grad_y * y).sum(axis=dim, keepdims=True))


def log_softmax_forward(x, dim):
    """Log-softmax along axis ``dim``: ``y_k = x_k - log Σ_j exp(x_j)``, computed as
    ``(x_k - m) - log Σ_j exp(x_j - m)`` with ``m = max_j x_j`` so that no exponential overflows
    (log-sum-exp)."""
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


def log_softmax_backward(y, grad_y, dim):
    """Gradient of :func:`log_softmax_forward` from its output ``y``, with ``g = ∂L/∂y``:
    ``∂y_k/∂x_j = δ_kj - softmax(x)_j = δ_kj - exp(y_j)``, so ``∂L/∂x_j = g_j - exp(y_j) Σ_k g_k``."""
    return grad_y - np.exp(y) * grad_y.sum(axis=dim, keepdims=True)


# ----------------------------------------------------------------------------- cross-entropy on logits

def cross_entropy_forward(logits, target, scale):
    """Cross-entropy of logits ``z`` (N, C) against labels ``t``, seed 3.3.3's ``L = -Σ_i t_i log y_i``
    with one-hot ``t`` and ``y = softmax(z)``:
    ``L = -scale Σ_n log_softmax(z_n)[t_n]`` (log-softmax by :func:`log_softmax_forward`)."""
    log_probs = log_softmax_forward(logits, 1)
    return -log_probs[np.arange(len(target)), target].sum() * scale


def cross_entropy_backward(logits, target, scale):
    """Gradient of :func:`cross_entropy_forward`: ``∂L/∂z[n, k] = scale (softmax(z_n)_k - [k = t_n])``
    ("prediction minus target": the softmax Jacobian and the logarithm's ``1/y`` cancel). The softmax
    is taken as ``exp(log_softmax(z))``."""
    grad = np.exp(log_softmax_forward(logits, 1))
    grad[np.arange(len(target)), target] -= 1.0
    return grad * logits.dtype.type(scale)


# ----------------------------------------------------------------------------- negative log-likelihood

def nll_forward(log_probs, target, scale):
    """Negative log-likelihood of log-probabilities ``y`` (N, C), e.g. a log-softmax output:
    ``L = -scale Σ_n y[n, t_n]``."""
    return -log_probs[np.arange(len(target)), target].sum() * scale


def nll_backward(log_probs, target, scale):
    """Gradient of :func:`nll_forward`: ``∂L/∂y[n, k] = -scale [k = t_n]`` (zero off the true classes)."""
    grad = np.zeros_like(log_probs)
    grad[np.arange(len(target)), target] = -scale
    return grad


# ----------------------------------------------------------------------------- mean squared error

def mse_forward(input, target, scale):
    """Squared error over all elements: ``L = scale Σ_i (y_i - t_i)²`` (``scale = 1/n``: the mean);
    ``target`` has ``input``'s shape and dtype."""
    diff = input - target
    return (diff * diff).sum() * scale


def mse_backward(input, target, scale):
    """Gradient of :func:`mse_forward`: ``∂L/∂y_i = 2 scale (y_i - t_i)``."""
    diff = input - target
    return diff * input.dtype.type(2.0 * scale)

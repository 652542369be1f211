"""Element-wise and normalizing activations: ``ReLU``, ``Softmax``, ``LogSoftmax``."""
import numpy as np

from . import ops
from .module import Module


class ReLU(Module):
    """``y = max(x, 0)``; backward ``∂L/∂x = ∂L/∂y · [x > 0]``."""

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        self._positive = x > 0
        return np.maximum(x, 0)

    def backward(self, grad_output, need_input_grad=True):
        positive = self._saved("_positive")
        self._check_grad_output(grad_output, positive.shape)
        return grad_output * positive if need_input_grad else None


def _check_dim(x, dim, where):
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{where}: dim {dim} is out of range for an input of shape {x.shape}")


class LogSoftmax(Module):
    """``y_k = x_k - log Σ_j exp(x_j)`` along ``dim``, computed as ``x_k - m - log Σ_j exp(x_j - m)``
    with ``m = max_j x_j`` so that no exponential overflows (log-sum-exp).

    Backward: ``∂L/∂x_k = g_k - exp(y_k) Σ_j g_j``.
    """

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        _check_dim(x, self.dim, self._where())
        shifted = x - x.max(axis=self.dim, keepdims=True)
        self._output = shifted - np.log(np.exp(shifted).sum(axis=self.dim, keepdims=True))
        return self._output

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        self._check_grad_output(grad_output, y.shape)
        if not need_input_grad:
            return None
        return grad_output - np.exp(y) * grad_output.sum(axis=self.dim, keepdims=True)


class Softmax(Module):
    """``y_k = exp(x_k - m) / Σ_j exp(x_j - m)`` along ``dim`` with ``m = max_j x_j``.

    Backward: ``∂L/∂x_k = y_k (g_k - Σ_j g_j y_j)``.
    """

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        _check_dim(x, self.dim, self._where())
        e = np.exp(x - x.max(axis=self.dim, keepdims=True))
        self._output = e / e.sum(axis=self.dim, keepdims=True)
        return self._output

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        self._check_grad_output(grad_output, y.shape)
        if not need_input_grad:
            return None
        return y * (grad_output - (grad_output * y).sum(axis=self.dim, keepdims=True))

"""Element-wise and normalizing activations: ``ReLU``, ``Softmax``, ``LogSoftmax``."""
import numpy as np

from . import ops
from .module import Module


class ReLU(Module):
    """``y = max(x, 0)``; backward ``∂L/∂x = ∂L/∂y · [x > 0]`` (see :func:`nnscratch.reference.relu_forward`)."""

    def forward(self, x):
        y = ops.relu(x, where=self._where())
        self._save_for_backward(_output=y)
        return y

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        self._check_grad_output(grad_output, y.shape)
        return ops.relu_backward(y, grad_output, where=self._where()) if need_input_grad else None


class _AlongDim(Module):
    """What ``LogSoftmax`` and ``Softmax`` share: the axis ``dim`` they normalize along, the input
    checks, and saving the output (both backward passes are written in terms of it)."""

    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def extra_repr(self):
        return f"dim={self.dim}"

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(f"{self._where()}: dim {self.dim} is out of range for an input of shape {x.shape}")
        y = self._normalize(x - x.max(axis=self.dim, keepdims=True))
        self._save_for_backward(_output=y)
        return y

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        self._check_grad_output(grad_output, y.shape)
        return self._input_grad(y, grad_output) if need_input_grad else None


class LogSoftmax(_AlongDim):
    """``y_k = x_k - log Σ_j exp(x_j)`` along ``dim``, computed as ``x_k - m - log Σ_j exp(x_j - m)``
    with ``m = max_j x_j`` so that no exponential overflows (log-sum-exp).

    Backward: ``∂L/∂x_k = g_k - exp(y_k) Σ_j g_j``.
    """

    def _normalize(self, shifted):
        return shifted - np.log(np.exp(shifted).sum(axis=self.dim, keepdims=True))

    def _input_grad(self, y, g):
        return g - np.exp(y) * g.sum(axis=self.dim, keepdims=True)


class Softmax(_AlongDim):
    """``y_k = exp(x_k - m) / Σ_j exp(x_j - m)`` along ``dim`` with ``m = max_j x_j``.

    Backward: ``∂L/∂x_k = y_k (g_k - Σ_j g_j y_j)``.
    """

    def _normalize(self, shifted):
        e = np.exp(shifted)
        return e / e.sum(axis=self.dim, keepdims=True)

    def _input_grad(self, y, g):
        return y * (g - (g * y).sum(axis=self.dim, keepdims=True))

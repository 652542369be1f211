"""Element-wise and normalizing activations: ``ReLU``, ``Softmax``, ``LogSoftmax``."""
import math

from .. import ops
from ..checks import check_int
from .module import Module
from .registry import register_layer


@register_layer
class ReLU(Module):
    """``y = max(x, 0)``; backward ``∂L/∂x = ∂L/∂y · [x > 0]`` (see :func:`nnscratch.backends.reference.relu_forward`)."""

    def constructor_args(self):
        return {}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def flops(self, input_shape):
        """One comparison per element."""
        return math.prod(input_shape)

    def forward(self, x):
        y = ops.relu(x, where=self._where())
        self._save_for_backward(_output=y)
        return y

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        ops.check_grad_output(grad_output, y.shape, self._where())
        return ops.relu_backward(y, grad_output, where=self._where()) if need_input_grad else None


class _AlongDim(Module):
    """What ``LogSoftmax`` and ``Softmax`` share: the axis ``dim`` they normalize along and saving the
    output (both backward passes are written in terms of it). ``_forward`` and ``_backward`` are the
    :mod:`nnscratch.ops` functions of the subclass."""

    def __init__(self, dim=1):
        super().__init__()
        self.dim = check_int(dim, "dim", f"{type(self).__name__}(dim={dim!r})")

    def extra_repr(self):
        return f"dim={self.dim}"

    def constructor_args(self):
        return {"dim": self.dim}

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if not -len(input_shape) <= self.dim < len(input_shape):
            raise ValueError(f"{self._where()}: dim {self.dim} is out of range for an input of shape {input_shape}")
        return input_shape

    def flops(self, input_shape):
        """Four per element: the subtraction of the maximum, the exponential, the sum and the division
        (or the subtraction of the log-sum)."""
        return 4 * math.prod(self.output_shape(input_shape))

    def forward(self, x):
        y = self._forward(x, self.dim, where=self._where())
        self._save_for_backward(_output=y)
        return y

    def backward(self, grad_output, need_input_grad=True):
        y = self._saved("_output")
        ops.check_grad_output(grad_output, y.shape, self._where())
        return self._backward(y, grad_output, self.dim, where=self._where()) if need_input_grad else None


@register_layer
class LogSoftmax(_AlongDim):
    """``y_k = x_k - log Σ_j exp(x_j)`` along ``dim``, computed as ``x_k - m - log Σ_j exp(x_j - m)``
    with ``m = max_j x_j`` so that no exponential overflows (log-sum-exp).

    Backward: ``∂L/∂x_k = g_k - exp(y_k) Σ_j g_j`` (see :func:`nnscratch.backends.reference.log_softmax_forward`
    and :func:`~nnscratch.backends.reference.log_softmax_backward`).
    """

    _forward, _backward = staticmethod(ops.log_softmax), staticmethod(ops.log_softmax_backward)


@register_layer
class Softmax(_AlongDim):
    """``y_k = exp(x_k - m) / Σ_j exp(x_j - m)`` along ``dim`` with ``m = max_j x_j``.

    Backward: ``∂L/∂x_k = y_k (g_k - Σ_j g_j y_j)`` (see :func:`nnscratch.backends.reference.softmax_forward`
    and :func:`~nnscratch.backends.reference.softmax_backward`).
    """

    _forward, _backward = staticmethod(ops.softmax), staticmethod(ops.softmax_backward)

"""``Flatten``: from feature maps to feature vectors."""
import math

from .. import ops
from ..checks import check_int
from .module import Module
from .registry import register_layer


@register_layer
class Flatten(Module):
    """Reshape (N, C, H, W) -> (N, C·H·W) (all axes from ``start_dim`` on are merged, as ``torch.flatten(x, 1)``).
    Backward reshapes the gradient back."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = check_int(start_dim, "start_dim", f"Flatten(start_dim={start_dim!r})")

    def extra_repr(self):
        return f"start_dim={self.start_dim}"

    def constructor_args(self):
        return {"start_dim": self.start_dim}

    def output_shape(self, input_shape):
        """``input_shape[:start_dim] + (product of the rest,)``."""
        input_shape = tuple(input_shape)
        if len(input_shape) <= self.start_dim:
            raise ValueError(f"{self._where()}: input of shape {input_shape} has no axis {self.start_dim} to flatten from")
        return input_shape[:self.start_dim] + (math.prod(input_shape[self.start_dim:]),)

    def flops(self, input_shape):
        """Zero: a reshape computes nothing."""
        return 0

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        output_shape = self.output_shape(x.shape)
        self._save_for_backward(_input_shape=x.shape, _output_shape=output_shape)
        return x.reshape(output_shape)

    def backward(self, grad_output, need_input_grad=True):
        shape = self._saved("_input_shape")
        grad_output = ops.check_grad_output(grad_output, self._output_shape, self._where())
        return grad_output.reshape(shape) if need_input_grad else None

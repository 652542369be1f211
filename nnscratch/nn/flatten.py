"""``Flatten``: from feature maps to feature vectors."""
import math

from .. import ops
from .module import Module


class Flatten(Module):
    """Reshape (N, C, H, W) -> (N, C·H·W) (all axes from ``start_dim`` on are merged, as ``torch.flatten(x, 1)``).
    Backward reshapes the gradient back."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def extra_repr(self):
        return f"start_dim={self.start_dim}"

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        if x.ndim <= self.start_dim:
            raise ValueError(f"{self._where()}: input of shape {x.shape} has no axis {self.start_dim} to flatten from")
        output_shape = x.shape[:self.start_dim] + (math.prod(x.shape[self.start_dim:]),)
        self._save_for_backward(_input_shape=x.shape, _output_shape=output_shape)
        return x.reshape(output_shape)

    def backward(self, grad_output, need_input_grad=True):
        shape = self._saved("_input_shape")
        grad_output = ops.check_grad_output(grad_output, self._output_shape, self._where())
        return grad_output.reshape(shape) if need_input_grad else None

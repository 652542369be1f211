"""``Dense`` (PyTorch's ``Linear``): the fully connected layer."""
import numpy as np

from . import init, ops
from .module import Module, Parameter


class Dense(Module):
    """Fully connected layer: ``y = x Wᵀ + b``, i.e. ``y[n, o] = b[o] + Σ_i x[n, i] W[o, i]``.

    Backward: ``∂L/∂W = (∂L/∂y)ᵀ x``, ``∂L/∂b = Σ_n ∂L/∂y[n]``, ``∂L/∂x = (∂L/∂y) W``.

    ``weight`` has shape (out_features, in_features), as PyTorch's ``Linear``, so state dicts
    carry over unchanged. Input: (N, in_features).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Dense({in_features}, {out_features}): {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features, in_features)
        self.weight = Parameter(init.kaiming_uniform(shape, generator=generator, dtype=dtype))
        self.bias = Parameter(init.bias_uniform(out_features, in_features, generator, dtype)) if bias else None
        self._input = None

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None else ", bias=False")

    def forward(self, x):
        x = ops.check_float_array(x, self._where(), ndim=2, layout="(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"{self._where()}: input has {x.shape[1]} features (shape {x.shape}) but the layer expects "
                f"{self.in_features} (weight shape {self.weight.shape})"
            )
        y = x @ self.weight.data.T.astype(x.dtype, copy=False)
        if self.bias is not None:
            y += self.bias.data.astype(x.dtype, copy=False)
        self._input = x
        return y

    def backward(self, grad_output, need_input_grad=True):
        x = self._saved("_input")
        grad_output = ops.check_float_array(grad_output, self._where(), ndim=2, what="grad_output")
        if grad_output.shape != (x.shape[0], self.out_features):
            raise ValueError(f"{self._where()}: grad_output has shape {grad_output.shape}, "
                             f"expected {(x.shape[0], self.out_features)}")
        if self.weight.requires_grad:
            self.weight.accumulate_grad(grad_output.T @ x)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate_grad(grad_output.sum(axis=0))
        if not need_input_grad:
            return None
        return grad_output @ self.weight.data.astype(grad_output.dtype, copy=False)


Linear = Dense

"""``Dense`` (PyTorch's ``Linear``): the fully connected layer."""
import numpy as np

from . import init
from .. import ops
from ..checks import check_bool, check_float_dtype, check_size
from .module import Module, Parameter
from .registry import register_layer


@register_layer(aliases=("Linear",))
class Dense(Module):
    """Fully connected layer: ``y = x Wᵀ + b``, i.e. ``y[n, o] = b[o] + Σ_i x[n, i] W[o, i]``.

    Backward: ``∂L/∂W = (∂L/∂y)ᵀ x``, ``∂L/∂b = Σ_n ∂L/∂y[n]``, ``∂L/∂x = (∂L/∂y) W``
    (see :func:`nnscratch.backends.reference.linear_forward`, ``linear_backward`` and ``linear_bias_backward``;
    :mod:`nnscratch.ops` runs them on the active backend).

    ``weight`` has shape (out_features, in_features), as PyTorch's ``Linear``, so state dicts
    carry over unchanged. Input: (N, in_features).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, generator=None):
        super().__init__()
        shapes = self.parameter_shapes(in_features, out_features, bias=bias)
        self.out_features, self.in_features = shapes["weight"]
        dtype = check_float_dtype(dtype, f"Dense({in_features}, {out_features})")
        self.weight = Parameter(init.kaiming_uniform(shapes["weight"], generator=generator, dtype=dtype))
        self.bias = Parameter(init.bias_uniform(self.out_features, self.in_features, generator, dtype)) \
            if "bias" in shapes else None
        self._input = None

    @classmethod
    def parameter_shapes(cls, in_features, out_features, bias=True, **_):
        """``{"weight": (out_features, in_features), "bias": (out_features,)}`` (no bias if ``bias=False``),
        with the constructor's checks of these arguments."""
        where = f"Dense({in_features}, {out_features})"
        weight = (check_size(out_features, "out_features", where), check_size(in_features, "in_features", where))
        return {"weight": weight, "bias": weight[:1]} if check_bool(bias, "bias", where) else {"weight": weight}

    def constructor_args(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None,
                "dtype": self.weight.dtype}

    def output_shape(self, input_shape):
        """``(N, out_features)`` for an input ``(N, in_features)``."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 2 or input_shape[1] != self.in_features:
            raise ValueError(f"{self._where()}: expects an input (N, {self.in_features}), got {input_shape}")
        return (input_shape[0], self.out_features)

    def flops(self, input_shape):
        """``2 · N · in_features · out_features`` (one multiply-add per weight and sample), plus ``N · out_features``
        additions for the bias."""
        n, outputs = self.output_shape(input_shape)
        return 2 * n * self.in_features * outputs + (n * outputs if self.bias is not None else 0)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None else ", bias=False")

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        y = ops.linear(x, self.weight.data, bias, where=self._where())
        self._save_for_backward(_input=x)
        return y

    def backward(self, grad_output, need_input_grad=True):
        x = self._saved("_input")
        grad_x, grad_weight = ops.linear_backward(
            x, self.weight.data, grad_output, need_input_grad=need_input_grad,
            need_weight_grad=self.weight.requires_grad, where=self._where(),
        )
        if grad_weight is not None:
            self.weight.accumulate_grad(grad_weight, copy=False)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate_grad(ops.linear_bias_backward(grad_output, where=self._where()), copy=False)
        return grad_x


Linear = Dense

"""``Conv2d``: the convolution layer of seed 3.3.1."""
import math

import numpy as np

from . import init
from .. import ops
from ..backends import conv_algorithm
from ..checks import check_bool, check_float_dtype, check_size
from .module import Module, Parameter
from .registry import register_layer


@register_layer
class Conv2d(Module):
    """2-D convolution over an NCHW batch.

    .. math::
        y[n, f, i, j] = b[f] + \\sum_{c, p, q} x_{pad}[n, c, i S_h + p, j S_w + q] \\, w[f, c, p, q]

    (the seed's ``y(i,j) = Σ_p Σ_q x(i+p, j+q)·k(p,q)`` summed over input channels). The
    formula and its gradients are in :mod:`nnscratch.backends.reference`; the active backend computes them.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
        Zero padding of ``padding`` pixels on each side.
    bias : bool
    dtype : float32 (default) or float64
    algorithm : ``"auto"`` (default), ``"direct"``, ``"winograd"`` or ``"winograd_2x2"``: how the
        convolution is computed (:mod:`nnscratch.backends.conv_algorithm`); :meth:`algorithm_for` tells
        which one runs for an input shape. The Winograd variants take 3×3 kernels with stride 1 only.
    generator : numpy Generator for the initialization (default: :func:`nnscratch.rng.default_generator`)

    Shapes: ``x`` (N, in_channels, H, W) -> ``y`` (N, out_channels, OH, OW) with
    ``OH = (H + 2 P_h - K_h) // S_h + 1``; ``weight`` (out_channels, in_channels, K_h, K_w).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dtype=np.float32, generator=None, algorithm="auto"):
        super().__init__()
        where = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        shapes = self.parameter_shapes(in_channels, out_channels, kernel_size, bias=bias)
        self.out_channels, self.in_channels, *kernel = shapes["weight"]
        self.kernel_size = tuple(kernel)
        self.stride = ops.pair(stride, "stride", where, 1)
        self.padding = ops.pair(padding, "padding", where, 0)
        self.algorithm = conv_algorithm.check_algorithm(algorithm, where)
        conv_algorithm.check_supported(algorithm, self.kernel_size, self.stride, where)
        dtype = check_float_dtype(dtype, where)
        self.weight = Parameter(init.kaiming_uniform(shapes["weight"], generator=generator, dtype=dtype))
        self.bias = Parameter(init.bias_uniform(self.out_channels, init.fan_in(shapes["weight"]), generator, dtype)) \
            if "bias" in shapes else None
        self._input = None

    @classmethod
    def parameter_shapes(cls, in_channels, out_channels, kernel_size, bias=True, **_):
        """``{"weight": (out_channels, in_channels, K_h, K_w), "bias": (out_channels,)}`` (no bias if
        ``bias=False``), with the constructor's checks of these arguments."""
        where = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        weight = (check_size(out_channels, "out_channels", where), check_size(in_channels, "in_channels", where)) \
            + ops.pair(kernel_size, "kernel_size", where, 1)
        return {"weight": weight, "bias": weight[:1]} if check_bool(bias, "bias", where) else {"weight": weight}

    def constructor_args(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "padding": self.padding, "bias": self.bias is not None,
                "dtype": self.weight.dtype, "algorithm": self.algorithm}

    def output_shape(self, input_shape):
        """``(N, out_channels, OH, OW)`` with ``OH = (H + 2 P_h - K_h) // S_h + 1``
        (:func:`nnscratch.backends.reference.output_size`)."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[1] != self.in_channels:
            raise ValueError(f"{self._where()}: expects an input (N, {self.in_channels}, H, W), got {input_shape}")
        out_hw = ops.window_output_size(input_shape, self.kernel_size, self.stride, self.padding, self._where())
        return (input_shape[0], self.out_channels) + out_hw

    def flops(self, input_shape):
        """``2 · C · K_h · K_w`` per output value (one multiply-add per weight), plus one addition for the bias."""
        outputs = math.prod(self.output_shape(input_shape))
        return 2 * outputs * self.in_channels * math.prod(self.kernel_size) + (outputs if self.bias is not None else 0)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            text += f", stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        text += "" if self.bias is not None else ", bias=False"
        return text + ("" if self.algorithm == "auto" else f", algorithm={self.algorithm!r}")

    def algorithm_for(self, input_shape):
        """The algorithm a forward on an ``input_shape`` (N, C, H, W) batch runs: ``"direct"``,
        ``"winograd"`` or ``"winograd_2x2"`` (see :func:`nnscratch.backends.conv_algorithm.choose`)."""
        weight_shape = (self.out_channels, self.in_channels) + self.kernel_size
        return conv_algorithm.choose(self.algorithm, tuple(input_shape), weight_shape, self.stride, self.padding,
                                     self._where())

    def forward(self, x):
        bias = None if self.bias is None else self.bias.data
        algorithm = self.algorithm_for(np.shape(x))
        y = ops.conv2d(x, self.weight.data, bias, self.stride, self.padding, where=self._where(), algorithm=algorithm)
        self._save_for_backward(_input=x, _algorithm=algorithm)  # the backward runs the forward's algorithm
        return y

    def backward(self, grad_output, need_input_grad=True):
        """``∂L/∂x`` (or ``None``); adds ``∂L/∂w`` and ``∂L/∂b = Σ_{n,i,j} ∂L/∂y[n,f,i,j]`` to the parameters'
        ``.grad`` unless they are frozen (see :func:`nnscratch.backends.reference.conv2d_backward`
        and :func:`~nnscratch.backends.reference.conv2d_bias_backward`)."""
        x = self._saved("_input")
        grad_x, grad_weight = ops.conv2d_backward(
            x, self.weight.data, grad_output, self.stride, self.padding,
            need_input_grad=need_input_grad, need_weight_grad=self.weight.requires_grad, where=self._where(),
            algorithm=self._saved("_algorithm"),
        )
        if grad_weight is not None:
            self.weight.accumulate_grad(grad_weight, copy=False)
        if self.bias is not None and self.bias.requires_grad:
            self.bias.accumulate_grad(ops.conv2d_bias_backward(grad_output, where=self._where()), copy=False)
        return grad_x

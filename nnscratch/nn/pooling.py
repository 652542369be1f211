"""``MaxPool2d`` and ``AvgPool2d``: the pooling layers of seed 3.3.2."""
import math

from .. import ops
from .module import Module
from .registry import register_layer


class _Pool2d(Module):
    """What both pooling layers share: hyper-parameters, their display, output shape and FLOPs."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        where = f"{type(self).__name__}(kernel_size={kernel_size})"
        self.kernel_size = ops.pair(kernel_size, "kernel_size", where, 1)
        self.stride = self.kernel_size if stride is None else ops.pair(stride, "stride", where, 1)
        self.padding = ops.pair(padding, "padding", where, 0)
        self._input_shape = None

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}"
        return text + (f", padding={self.padding}" if self.padding != (0, 0) else "")

    def constructor_args(self):
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def output_shape(self, input_shape):
        """``(N, C, OH, OW)`` with ``OH = (H + 2 P_h - K_h) // S_h + 1`` (:func:`nnscratch.backends.reference.output_size`)."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(f"{self._where()}: expects an input (N, C, H, W), got {input_shape}")
        *_, out_hw = ops.pool_geometry(input_shape, self.kernel_size, self.stride, self.padding, self._where())
        return input_shape[:2] + out_hw

    def flops(self, input_shape):
        """``K_h · K_w`` per output value (a comparison or an addition per window element)."""
        return math.prod(self.output_shape(input_shape)) * math.prod(self.kernel_size)


@register_layer
class MaxPool2d(_Pool2d):
    """Max pooling: ``y[n,c,i,j] = max_{p,q} x_pad[n, c, i S_h + p, j S_w + q]`` (padding by ``-inf``).

    ``stride`` defaults to ``kernel_size``. The backward pass sends each output's gradient to
    the first maximal pixel of its window; overlapping windows accumulate. See
    :func:`nnscratch.backends.reference.maxpool2d_forward` for the tie rule.
    """

    def forward(self, x):
        y, argmax = ops.max_pool2d(x, self.kernel_size, self.stride, self.padding, where=self._where())
        self._save_for_backward(_argmax=argmax, _input_shape=x.shape)
        return y

    def backward(self, grad_output, need_input_grad=True):
        argmax, input_shape = self._saved("_argmax"), self._saved("_input_shape")
        if not need_input_grad:
            return None
        return ops.max_pool2d_backward(grad_output, argmax, input_shape, where=self._where())


@register_layer
class AvgPool2d(_Pool2d):
    """Average pooling: ``y[n,c,i,j] = 1/(K_h K_w) Σ_{p,q} x_pad[n, c, i S_h + p, j S_w + q]``.

    ``stride`` defaults to ``kernel_size``; zero padding counts in the mean (PyTorch's default).
    """

    def forward(self, x):
        y = ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding, where=self._where())
        self._save_for_backward(_input_shape=x.shape)
        return y

    def backward(self, grad_output, need_input_grad=True):
        input_shape = self._saved("_input_shape")
        if not need_input_grad:
            return None
        return ops.avg_pool2d_backward(grad_output, input_shape, self.kernel_size, self.stride, self.padding,
                                       where=self._where())

"""``Dropout``: inverted dropout, active in training mode only."""
import numpy as np

from . import ops
from .module import Module
from .rng import default_generator


class Dropout(Module):
    """Zero each element with probability ``p`` and scale the survivors by ``1/(1-p)`` so the
    expected activation is unchanged ("inverted" dropout, as PyTorch); the identity in eval mode.

    ``y = x · m / (1 - p)`` with ``m ~ Bernoulli(1 - p)``; backward ``∂L/∂x = ∂L/∂y · m / (1 - p)``.

    Masks are drawn from ``generator`` (default: the library-wide generator of :mod:`nnscratch.rng`,
    so :func:`nnscratch.manual_seed` makes them reproducible); :meth:`manual_seed` gives this
    layer a generator of its own (gradient checks use it to replay one mask).
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout(p={p}): p must be in [0, 1)")
        self.p = float(p)
        self.generator = generator

    def extra_repr(self):
        return f"p={self.p}"

    def manual_seed(self, seed):
        self.generator = np.random.default_rng(seed)

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        self._output_shape = x.shape
        if not self.training or self.p == 0.0:
            self._scale = None  # the identity: the gradient passes unchanged
            return x
        generator = self.generator or default_generator()
        keep = generator.random(x.shape, dtype=np.float32) >= self.p
        self._scale = np.multiply(keep, 1.0 / (1.0 - self.p), dtype=x.dtype)  # m / (1 - p)
        return x * self._scale

    def backward(self, grad_output, need_input_grad=True):
        self._check_grad_output(grad_output, self._saved("_output_shape"))
        if not need_input_grad:
            return None
        return grad_output if self._scale is None else grad_output * self._scale

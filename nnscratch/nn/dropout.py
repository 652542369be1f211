"""``Dropout``: inverted dropout, active in training mode only."""
import numbers

import numpy as np

from .. import ops
from .module import Module
from .registry import register_layer
from ..rng import default_generator


@register_layer
class Dropout(Module):
    """Zero each element with probability ``p`` and scale the survivors by ``1/(1-p)`` so the
    expected activation is unchanged ("inverted" dropout, as PyTorch); the identity in eval mode.

    ``y = x · m / (1 - p)`` with ``m ~ Bernoulli(1 - p)``; backward ``∂L/∂x = ∂L/∂y · m / (1 - p)``
    (:func:`nnscratch.backends.reference.dropout_forward`).

    Each forward pass draws one 64-bit key from ``generator`` (default: the library-wide generator
    of :mod:`nnscratch.rng`, so :func:`nnscratch.manual_seed` makes the masks reproducible); the
    mask is a pure function of that key (:func:`nnscratch.backends.reference.dropout_keep_mask`), so the
    backward pass recomputes it rather than keeping it in memory. :meth:`manual_seed` gives this
    layer a generator of its own (gradient checks use it to replay one mask).
    """

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout(p={p!r}): p must be in [0, 1) (a Python or NumPy number), got {p!r}")
        self.p = float(p)
        self.generator = generator

    def extra_repr(self):
        return f"p={self.p}"

    def constructor_args(self):
        return {"p": self.p}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def flops(self, input_shape):
        """Zero: dropout is the identity in eval mode."""
        return 0

    def manual_seed(self, seed):
        self.generator = np.random.default_rng(seed)

    def forward(self, x):
        x = ops.check_float_array(x, self._where())
        if not self._acts_as_training() or self.p == 0.0:
            self._save_for_backward(_output_shape=x.shape, _key=None)  # the identity: the gradient passes unchanged
            return x
        generator = self.generator or default_generator()
        key = int(generator.integers(0, 2**64, dtype=np.uint64))
        self._save_for_backward(_output_shape=x.shape, _key=key)
        return ops.dropout(x, self.p, key, where=self._where())

    def backward(self, grad_output, need_input_grad=True):
        output_shape = self._saved("_output_shape")
        grad_output = ops.check_grad_output(grad_output, output_shape, self._where())
        if not need_input_grad:
            return None
        if self._key is None:
            return grad_output
        return ops.dropout_backward(grad_output, self.p, self._key, output_shape, where=self._where())

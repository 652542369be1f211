"""Weight initialization, as PyTorch's defaults so the seed's hyper-parameters behave as there.

``Conv2d`` and ``Dense`` weights: Kaiming-uniform with ``a = √5``, i.e. ``U(-b, b)`` with
``b = gain · √(3 / fan_in)`` and ``gain = √(2 / (1 + a²))``, which is ``b = 1/√fan_in``.
Biases: ``U(-1/√fan_in, 1/√fan_in)``. ``fan_in`` is the number of inputs of one output unit
(``in_channels · K_h · K_w`` for a convolution, ``in_features`` for a dense layer).
"""
import math

import numpy as np

from ..rng import default_generator


def fan_in(shape):
    """Inputs feeding one output unit: the product of every axis but the first."""
    return int(np.prod(shape[1:]))


SQRT_5 = math.sqrt(5)  # PyTorch's default negative slope for weights, a = √5


def kaiming_uniform(shape, a=SQRT_5, generator=None, dtype=np.float32):
    """``U(-b, b)``, ``b = √(2 / (1 + a²)) · √(3 / fan_in)`` (He et al. 2015, PyTorch's default for weights)."""
    bound = math.sqrt(2.0 / (1 + a * a)) * math.sqrt(3.0 / fan_in(shape))
    generator = generator or default_generator()
    return generator.uniform(-bound, bound, size=shape).astype(dtype)


def bias_uniform(size, fan_in, generator=None, dtype=np.float32):
    """``U(-1/√fan_in, 1/√fan_in)``, PyTorch's default for biases."""
    bound = 1.0 / math.sqrt(fan_in)
    generator = generator or default_generator()
    return generator.uniform(-bound, bound, size=size).astype(dtype)

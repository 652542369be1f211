"""The library's random number generator: one seed makes a run reproducible.

Weight initialization and dropout masks draw from :func:`default_generator` unless a
layer is given its own generator. It is seeded with 0 when nnscratch is imported, so
two fresh processes build identical networks; :func:`manual_seed` reseeds it (like
``torch.manual_seed``).
"""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the library-wide generator; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    return _generator

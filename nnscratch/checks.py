"""The argument checkers shared by the layers and the readers of files and states (weight files,
checkpoints, generator states, schedulers): one test of each concept, with one error message."""
import numbers

import numpy as np

from .ops import FLOAT_DTYPES


def short_repr(value, limit=60):
    """``repr(value)``, cut to `limit` characters: what an error message quotes of a value read from a file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_int(value):
    """Whether `value` is an integer, Python's or NumPy's, but not a bool (``True`` is an ``int`` to Python).
    A JSON integer read from a file header passes; ``1.0`` and ``"1"`` do not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_in_range(value, low, high, where):
    """`value` as an ``int`` if it is an integer (not a bool, not a float) in ``[low, high]``; else a
    ValueError: ``"<where> must be an integer in [low, high], got <value>"``."""
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{where} must be an integer in [{low}, {high}], got {short_repr(value)}")
    return int(value)


def check_size(value, name, where):
    """A layer size (channels, features...): a positive integer, Python's or NumPy's but not a
    bool; returned as a Python ``int``, or a ValueError naming the layer (``where``) and the value."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {short_repr(value)}")
    return int(value)


def check_int(value, name, where):
    """An integer argument of any sign (an axis), as a Python ``int``; else a TypeError naming the layer."""
    if not is_int(value):
        raise TypeError(f"{where}: {name} must be an int, got {short_repr(value)}")
    return int(value)


def check_bool(value, name, where):
    """A flag: ``True`` or ``False`` (NumPy's bools too), as a Python ``bool``; else a TypeError naming the layer."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {short_repr(value)}")
    return bool(value)


def check_float_dtype(dtype, where):
    """A parameter dtype: float32 or float64, given as a NumPy type, a dtype or its name (``"float32"``, as a
    weight file's header records it); returned as a ``np.dtype``, else an error naming the layer."""
    if not isinstance(dtype, (str, type, np.dtype)):
        raise TypeError(f"{where}: dtype must be float32 or float64, got {short_repr(dtype)}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {short_repr(dtype)}") from None
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{where}: dtype must be float32 or float64, got {dtype}")
    return dtype

"""Small checks shared by the readers of files and states (checkpoints, generator states, schedulers)."""
import numbers


def short_repr(value, limit=60):
    """``repr(value)``, cut to `limit` characters: what an error message quotes of a value read from a file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def int_in_range(value, low, high, where):
    """`value` as an ``int`` if it is an integer (not a bool, not a float) in ``[low, high]``; else a
    ValueError: ``"<where> must be an integer in [low, high], got <value>"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{where} must be an integer in [{low}, {high}], got {short_repr(value)}")
    return int(value)

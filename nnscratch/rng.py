"""The library's random number generator: one seed makes a run reproducible.

Weight initialization and dropout masks draw from :func:`default_generator` unless a
layer is given its own generator. It is seeded with 0 when nnscratch is imported, so
two fresh processes build identical networks; :func:`manual_seed` reseeds it (like
``torch.manual_seed``).
"""
import numpy as np

from .checks import short_repr

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the library-wide generator; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    return _generator


# ---------------------------------------------------------------------------
# Generator states in files (checkpoints)
# ---------------------------------------------------------------------------

BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}
"""The bit generators whose state a checkpoint may hold: the name stored in a file is looked up
here and nowhere else, so a file can never make the library call some other function."""

_INT_BOUNDS = {"pos": 624, "buffer_pos": 4, "has_uint32": 1, "uinteger": 2**32 - 1}
"""Largest value of an integer field of a state, by field name (NumPy does not check these: an
MT19937 ``pos`` past 624 or a Philox ``buffer_pos`` past 4 makes it read outside its buffers).
Any other integer field is a 128-bit word at most."""
_ARRAY_DTYPES = ("<u4", "<u8")


def state_to_json(state):
    """A bit generator's ``state`` dict as strict JSON: arrays (e.g. an MT19937 key) become
    ``{"__ndarray__": [...], "dtype": "<u4"}``, NumPy integers plain ints."""
    if isinstance(state, dict):
        return {str(key): state_to_json(value) for key, value in state.items()}
    if isinstance(state, np.ndarray):
        return {"__ndarray__": state.tolist(), "dtype": state.dtype.str}
    if isinstance(state, np.generic):
        return state.item()
    return state


def state_from_json(data, where, expected=None):
    """
    Check a generator state read from a file and return ``(bit generator class, state dict)``.

    `data` must name one of :data:`BIT_GENERATORS` (or `expected`, the class of the generator it
    will be set on) and have exactly the fields, integer ranges, array dtypes and lengths of that
    class's own ``state``; it is then tried on a scratch bit generator, so the state returned is
    one NumPy accepts. Nothing is allocated beyond the sizes of that template. `where` names the
    file and the generator in the ``ValueError`` raised otherwise.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a generator state must be a JSON object, got {type(data).__name__}")
    name = data.get("bit_generator")
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise ValueError(f"{where}: unknown bit generator {short_repr(name)}; "
                         f"a checkpoint may name only {', '.join(BIT_GENERATORS)}")
    cls = BIT_GENERATORS[name]
    if expected is not None and cls is not expected:
        raise ValueError(f"{where}: the state is for a {name} bit generator, the generator it would "
                         f"restore is a {expected.__name__}")
    state = _match(data, cls(0).state, where)
    try:
        cls(0).state = state
    except (TypeError, ValueError, OverflowError, KeyError) as exc:
        raise ValueError(f"{where}: NumPy refuses this {name} state ({exc})") from exc
    return cls, state


def _match(value, template, where):
    """`value` (from JSON) checked against `template` (a real state); returns it in NumPy form."""
    if isinstance(template, dict):
        if not isinstance(value, dict) or set(value) != set(template):
            found = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"{where}: expected the fields {sorted(template)}, got {short_repr(found)}")
        return {key: _match(value[key], template[key], f"{where}.{key}") for key in template}
    if isinstance(template, str):
        if value != template:
            raise ValueError(f"{where}: expected {template!r}, got {short_repr(value)}")
        return value
    if isinstance(template, np.ndarray):
        if not isinstance(value, dict) or set(value) != {"__ndarray__", "dtype"}:
            raise ValueError(f"{where}: expected an array {{'__ndarray__': [...], 'dtype': ...}}, got {short_repr(value)}")
        dtype, items = value["dtype"], value["__ndarray__"]
        if dtype not in _ARRAY_DTYPES or dtype != template.dtype.str:
            raise ValueError(f"{where}: array dtype must be {template.dtype.str!r}, got {short_repr(dtype)}")
        if not isinstance(items, list) or len(items) != template.size:
            size = len(items) if isinstance(items, list) else type(items).__name__
            raise ValueError(f"{where}: expected a list of {template.size} integers, got {short_repr(size)}")
        top = 2 ** (8 * template.dtype.itemsize) - 1
        for item in items:
            _check_int(item, top, where)
        return np.array(items, dtype=template.dtype).reshape(template.shape)
    return _check_int(value, _INT_BOUNDS.get(where.rsplit(".", 1)[-1], 2**128 - 1), where)


def _check_int(value, top, where):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise ValueError(f"{where}: expected an integer in [0, {top}], got {short_repr(value)}")
    return value



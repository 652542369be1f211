"""PyTorch interoperability, without importing torch.

nnscratch layers carry PyTorch's names and weight layouts (``conv1.weight`` is
``(out_channels, in_channels, kH, kW)``, ``fc1.weight`` is ``(out_features, in_features)``), so a
PyTorch ``state_dict`` loads directly (:func:`from_torch_state_dict`) and an nnscratch model exports
to one (:func:`to_torch_state_dict`, which is :meth:`Module.state_dict <nnscratch.Module.state_dict>`).
Tensors are duck-typed (``.detach().cpu().numpy()``): this module never imports torch.
"""
from collections import OrderedDict

import numpy as np

from ..nn.state import STATE_DICT, load_arrays

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]


def _check_numeric(name, array, caller):
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{caller}: array {name!r} has dtype {array.dtype}; only numeric (float or integer) arrays "
                         "are accepted (object arrays are refused: they would need pickle)")
    return array


def _to_numpy(name, value):
    """A tensor (duck-typed: ``.detach().cpu().numpy()``) or array-like, as an ndarray."""
    try:
        if not isinstance(value, np.ndarray):
            if hasattr(value, "detach"):
                value = value.detach()
            if hasattr(value, "cpu"):
                value = value.cpu()
            if hasattr(value, "numpy"):
                value = value.numpy()
        array = np.asarray(value)
    except Exception as exc:  # e.g. a bfloat16 tensor
        raise ValueError(f"from_torch_state_dict: cannot convert {name!r} ({type(value).__name__}) to a NumPy "
                         f"array: {exc} (convert it with .float() first)") from exc
    return _check_numeric(name, array, "from_torch_state_dict")


def from_torch_state_dict(model, state_dict, strict=True, skip=()):
    """
    Load a PyTorch ``state_dict`` (or any ``{name: array}``) into an nnscratch model.

    nnscratch uses PyTorch's parameter names and layouts, so the seed's ``Net`` trained in
    PyTorch loads into :func:`nnscratch.models.seed_net` unchanged. Values may be torch
    tensors (converted with ``.detach().cpu().numpy()``, duck-typed: torch is never
    imported) or NumPy arrays; they are cast to each parameter's dtype (call
    ``model.double()`` first to keep float64 tensors in float64). Object arrays and other
    non-numeric values are refused.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    state_dict : mapping of str to tensor or array
    strict, skip :
        As for :func:`nnscratch.transfer.load_weights` (a strict failure lists every problem and
        loads nothing).

    Returns
    -------
    report : :class:`~nnscratch.nn.state.LoadReport`
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"from_torch_state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    arrays = OrderedDict()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"from_torch_state_dict: keys must be strings, got {name!r}")
        arrays[name] = _to_numpy(name, value)
    return load_arrays(model, arrays, strict=strict, skip=skip, source=STATE_DICT, caller="from_torch_state_dict")


def to_torch_state_dict(model):
    """
    The model's parameters as a PyTorch-style ``state_dict`` of NumPy arrays: ``model.state_dict()``.

    ``{name: torch.from_numpy(a) for name, a in to_torch_state_dict(net).items()}`` loads
    into the equivalent PyTorch model with ``load_state_dict``. The arrays are C-contiguous
    copies, in the parameters' dtype.

    Returns
    -------
    state_dict : OrderedDict of str to ndarray
    """
    return model.state_dict()

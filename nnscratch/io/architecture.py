"""A model's architecture as JSON-able data, and back: what a weight file's header records.

Each layer says what rebuilds it (:meth:`Module.constructor_args <nnscratch.Module.constructor_args>`)
and, before it exists, what parameters it would hold (:meth:`Module.parameter_shapes
<nnscratch.Module.parameter_shapes>`); this module keeps no table of classes. A description read
from a file is untrusted: :func:`build_model` instantiates only the classes of the registry
:data:`~nnscratch.nn.registry.LAYER_CLASSES` (so a file can name no code), after checking the
structure and each argument's *name* against the class's constructor; the class itself checks the
values, as it does for any caller, and each refusal names the entry.
"""
import inspect
from collections import OrderedDict

import numpy as np

from ..nn.container import Sequential
from ..nn.registry import LAYER_CLASSES

__all__ = ["LAYER_CLASSES", "MAX_DEPTH", "architecture", "build_model", "parameter_shapes", "validate_architecture"]

MAX_DEPTH = 16
"""Nesting of ``Sequential`` inside ``Sequential`` accepted by :func:`build_model`."""

_MAX_NAME = 200  # characters of a layer name in a header


def _json_value(value, where):
    """A constructor argument as JSON: tuples become lists, a dtype (or NumPy type) its name, NumPy scalars
    Python numbers; a TypeError naming the layer for anything JSON cannot hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_json_value(v, where) for v in value]
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{where} gave {value!r}, which a JSON header cannot hold")


def architecture(model, strict=True):
    """
    Describe a :class:`~nnscratch.Sequential` model as JSON-able data.

    The description is what :func:`nnscratch.transfer.save_weights` stores in a weight file's
    header and what :func:`build_model` turns back into a model with freshly initialized
    parameters of the right shapes. Each layer is one dict, its ``"args"`` being the layer's
    :meth:`~nnscratch.Module.constructor_args` (tuples as lists, a dtype as its name)::

        {"name": "conv1", "class": "Conv2d",
         "args": {"in_channels": 1, "out_channels": 32, "kernel_size": [3, 3], "stride": [1, 1],
                  "padding": [0, 0], "bias": true, "dtype": "float32"}}

    A nested ``Sequential`` is ``{"class": "Sequential", "args": {"layers": [...]}}``.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
        The network.
    strict : bool
        If True (default), a layer that cannot be rebuilt -- its class is not registered
        (:func:`~nnscratch.nn.register_layer`) or does not define ``constructor_args`` --
        raises :class:`ValueError`. If False it is recorded with ``"args": None``: the weights can
        still be saved and loaded with :func:`~nnscratch.transfer.load_weights` into a model built
        in code, but :func:`build_model` refuses to rebuild it.

    Returns
    -------
    arch : list of dict
        One ``{"name", "class", "args"}`` dict per child, in order.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"architecture: expected a Sequential model, got {type(model).__name__}")
    arch = []
    for name, layer in model.named_children():
        cls = type(layer).__name__
        if isinstance(layer, Sequential):
            args = {"layers": architecture(layer, strict)}
        else:
            args = layer.constructor_args() if LAYER_CLASSES.get(cls) is type(layer) else None
            if args is None and strict:
                raise ValueError(f"architecture: layer {name!r} is a {cls}, which cannot be described: its class "
                                 "is not registered (nnscratch.nn.register_layer) or does not define "
                                 f"constructor_args(); registered classes: {', '.join(sorted(LAYER_CLASSES))}")
            if args is not None:
                args = {key: _json_value(value, f"architecture: layer {name!r} ({cls}) argument {key!r}")
                        for key, value in args.items()}
        arch.append({"name": name, "class": cls, "args": args})
    return arch


def _header_arguments(cls):
    """(accepted, required) argument names of `cls`'s constructor as a header may give them. ``generator``
    is not one: :func:`build_model` passes its own to the layers that hold parameters."""
    parameters = [p for p in inspect.signature(cls).parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "generator"]
    return {p.name for p in parameters}, [p.name for p in parameters if p.default is p.empty]


def validate_architecture(arch, where, depth=0, prefix=""):
    """
    Check the structure of an (untrusted) architecture and return a copy: a list of objects with
    exactly the keys ``name`` (unique, no dot), ``class`` (registered) and ``args`` (an object whose
    keys the class's constructor takes, every required one present). The values are left to the
    classes (:func:`parameter_shapes`, :func:`build_model`). A ValueError starting with `where`
    (e.g. ``load_model(<path>)``) names the entry otherwise.
    """
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: Sequential nested deeper than {MAX_DEPTH} levels")
    if not isinstance(arch, list):
        raise ValueError(f"{where}: the architecture must be a list of layers, got {type(arch).__name__}")
    checked, names = [], set()
    for position, entry in enumerate(arch):
        if not isinstance(entry, dict) or set(entry) != {"name", "class", "args"}:
            raise ValueError(f"{where}: layer {prefix}#{position} must be an object with exactly the keys "
                             f"'name', 'class' and 'args', got {entry!r:.200}")
        name, cls_name, args = entry["name"], entry["class"], entry["args"]
        if not isinstance(name, str) or not name or "." in name or name in names or len(name) > _MAX_NAME:
            raise ValueError(f"{where}: layer {prefix}#{position} has an invalid or repeated name {name!r:.200}")
        names.add(name)
        full = prefix + name
        cls = LAYER_CLASSES.get(cls_name) if isinstance(cls_name, str) else None
        if cls is None:
            raise ValueError(f"{where}: layer {full!r} has class {cls_name!r:.200}, which cannot be rebuilt; "
                             f"registered classes: {', '.join(sorted(LAYER_CLASSES))}. Build the model in code and "
                             f"use load_weights")
        if cls is Sequential:
            if not isinstance(args, dict) or set(args) != {"layers"}:
                raise ValueError(f"{where}: Sequential {full!r} needs args {{'layers': [...]}}")
            args = {"layers": validate_architecture(args["layers"], where, depth + 1, full + ".")}
        else:
            if not isinstance(args, dict):
                raise ValueError(f"{where}: layer {full!r} ({cls_name}) has args {args!r:.200}, expected an object")
            accepted, required = _header_arguments(cls)
            unknown = sorted(set(args) - accepted)
            if unknown:
                raise ValueError(f"{where}: layer {full!r} ({cls_name}) has unknown arguments {unknown!r:.200}; "
                                 f"{cls_name} takes {sorted(accepted)}")
            missing = [key for key in required if key not in args]
            if missing:
                raise ValueError(f"{where}: layer {full!r} ({cls_name}) lacks the argument {missing[0]!r}")
        checked.append({"name": name, "class": cls_name, "args": dict(args)})
    return checked


def _refused(where, entry, full_name, exc):
    """A class's refusal (TypeError/ValueError) of an entry's arguments, as a ValueError naming the entry
    (and the file, through `where`)."""
    return ValueError(f"{where}: layer {full_name!r} ({entry['class']}): {exc}")


def parameter_shapes(arch, where="parameter_shapes", prefix=""):
    """
    ``({parameter name: shape}, [unknown layer names])`` of the model a validated architecture describes,
    computed by each class's :meth:`~nnscratch.Module.parameter_shapes` without building anything; the
    layers whose class does not say are listed (their parameters are known once built).
    """
    shapes, unknown = OrderedDict(), []
    for entry in arch:
        full = prefix + entry["name"]
        cls = LAYER_CLASSES[entry["class"]]
        if cls is Sequential:
            inner, inner_unknown = parameter_shapes(entry["args"]["layers"], where, full + ".")
            shapes.update(inner)
            unknown += inner_unknown
            continue
        try:
            layer_shapes = cls.parameter_shapes(**entry["args"])
        except (TypeError, ValueError) as exc:
            raise _refused(where, entry, full, exc) from None
        if layer_shapes is None:
            unknown.append(full)
        else:
            shapes.update((f"{full}.{name}", tuple(shape)) for name, shape in layer_shapes.items())
    return shapes, unknown


def build_model(arch, generator=None):
    """
    Build a :class:`~nnscratch.Sequential` from an :func:`architecture` description.

    Only registered classes are instantiated (:data:`~nnscratch.nn.registry.LAYER_CLASSES`), with
    arguments whose names their constructor takes, so a description read from an untrusted file
    cannot run code; each class checks its arguments' values, and any refusal raises
    :class:`ValueError` naming the layer.

    Parameters
    ----------
    arch : list of dict
        As returned by :func:`architecture`.
    generator : numpy Generator, optional
        Draws the initial weights (default: the library generator of :mod:`nnscratch.rng`); it is
        passed to the layers that hold parameters.

    Returns
    -------
    model : :class:`~nnscratch.Sequential`
        Freshly initialized parameters of the described shapes, in training mode.
    """
    return build_validated(validate_architecture(arch, "build_model"), generator, "build_model")


def build_validated(arch, generator, where, prefix=""):
    """The Sequential an already validated `arch` describes; `where` starts error messages
    (``load_model(<path>)`` for a file, so an argument a layer refuses names the file)."""
    layers = []
    for entry in arch:
        full = prefix + entry["name"]
        cls, args = LAYER_CLASSES[entry["class"]], dict(entry["args"])
        if cls is Sequential:
            layers.append((entry["name"], build_validated(args["layers"], generator, where, full + ".")))
            continue
        try:
            if "generator" in inspect.signature(cls).parameters and cls.parameter_shapes(**args):
                args["generator"] = generator
            layers.append((entry["name"], cls(**args)))
        except (TypeError, ValueError) as exc:
            raise _refused(where, entry, full, exc) from None
    return Sequential(OrderedDict(layers))

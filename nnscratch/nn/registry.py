"""The layer classes a weight file may name.

A weight file's architecture header names each layer's class (``"Conv2d"``) and its constructor
arguments (:meth:`Module.constructor_args <nnscratch.Module.constructor_args>`).
:func:`nnscratch.transfer.load_model` instantiates *only* the classes registered here, so a file can
name no code: a class it names that is not registered is refused. Each built-in layer joins with the
:func:`register_layer` decorator where it is defined; a layer of your own joins the same way, and then
round-trips through ``save_weights``/``load_model`` like the built-in ones::

    @nnscratch.nn.register_layer
    class Scale(nnscratch.Module):
        def __init__(self, factor=2.0):
            super().__init__()
            self.factor = factor

        def constructor_args(self):
            return {"factor": self.factor}
        ...
"""
from .container import Sequential
from .module import Module

LAYER_CLASSES = {"Sequential": Sequential}
"""``{name: class}``: the only classes :func:`nnscratch.transfer.build_model` (and so ``load_model``)
instantiates. ``Sequential`` is the container the architecture itself describes; the layers join with
:func:`register_layer`."""


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def register_layer(cls=None, *, aliases=()):
    """
    Class decorator: let weight files name the :class:`~nnscratch.Module` subclass `cls`.

    It is registered under its ``__name__`` (the name :func:`nnscratch.transfer.architecture`
    records) and each of `aliases` (``Dense`` is also ``"Linear"``). The class must define
    :meth:`~nnscratch.Module.constructor_args`. Registering a class again under the same name (a
    notebook cell run twice) replaces it; a name taken by another class raises :class:`ValueError`.

    Usage: ``@register_layer`` or ``@register_layer(aliases=("Linear",))``; returns `cls`.
    """
    if cls is None:
        return lambda cls: register_layer(cls, aliases=aliases)
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_layer: expected a Module subclass, got {cls!r}")
    if cls.constructor_args is Module.constructor_args:
        raise TypeError(f"register_layer: {cls.__name__} must define constructor_args(), the arguments a weight "
                        "file records to rebuild it")
    names = (cls.__name__, *aliases)
    for name in names:
        known = LAYER_CLASSES.get(name)
        if known is not None and _qualified_name(known) != _qualified_name(cls):
            raise ValueError(f"register_layer: the name {name!r} is taken by {_qualified_name(known)}")
    for name in names:
        LAYER_CLASSES[name] = cls
    return cls

"""``Sequential``: layers applied one after another, each under a name."""
from collections import OrderedDict

from .module import Module


class Sequential(Module):
    """Apply the children in order; backward runs them in reverse.

    Build it from modules (named ``"0"``, ``"1"``, …) or from an ``OrderedDict`` / list of
    ``(name, module)`` pairs, so that parameters get PyTorch's names (``conv1.weight``)::

        Sequential(OrderedDict(conv1=Conv2d(1, 32, 3), relu1=ReLU(), ...))

    Children are reached as attributes (``net.conv1``), by name (``net["conv1"]``) or by position
    (``net[0]``, ``net[-1]``); slicing by position or by name returns a new ``Sequential``
    sharing the same layers (``net[:"fc1"]`` is every layer before ``fc1``).

    ``backward(grad, need_input_grad=False)`` stops at the lowest layer that holds a trainable
    parameter: below it nothing needs a gradient, so nothing is computed.
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], (dict, list)) and not isinstance(layers[0], Module):
            pairs = layers[0].items() if isinstance(layers[0], dict) else layers[0]
        else:
            pairs = ((str(i), layer) for i, layer in enumerate(layers))
        for name, layer in pairs:
            self.append(layer, name)

    def append(self, layer, name=None):
        """Add ``layer`` at the end under ``name`` (default: its position)."""
        name = str(len(self._modules)) if name is None else name
        if not isinstance(name, str):
            raise TypeError(f"Sequential: a layer name must be a str, got {type(name).__name__} {name!r}")
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: {name!r} must be a Module, got {type(layer).__name__}")
        if name in self._modules:
            raise ValueError(f"Sequential: a layer named {name!r} exists already")
        if not name or "." in name:
            raise ValueError(f"Sequential: layer name {name!r} must be non-empty and contain no '.' "
                             "(dots separate the levels of parameter names such as 'conv1.weight')")
        if hasattr(self, name):
            raise ValueError(f"Sequential: layer name {name!r} would hide the attribute Sequential.{name}")
        setattr(self, name, layer)
        return self

    def names(self):
        return list(self._modules)

    def index(self, name):
        """Position of the child called ``name``."""
        names = self.names()
        if name not in names:
            raise KeyError(f"Sequential has no layer {name!r}; its layers are {names}")
        return names.index(name)

    def _position(self, key):
        if isinstance(key, str):
            return self.index(key)
        return key

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop = self._position(key.start), self._position(key.stop)
            items = list(self._modules.items())[slice(start, stop, key.step)]
            return Sequential(OrderedDict(items))
        if isinstance(key, str):
            self.index(key)
            return self._modules[key]
        return list(self._modules.values())[key]

    def __setitem__(self, key, layer):
        """Replace a child (by name or position), keeping its name and place."""
        name = key if isinstance(key, str) else self.names()[key]
        self.index(name)
        if not isinstance(layer, Module):
            raise TypeError(f"Sequential: {name!r} must be a Module, got {type(layer).__name__}")
        self._modules[name] = layer
        object.__setattr__(self, name, layer)

    def __delitem__(self, key):
        name = key if isinstance(key, str) else self.names()[key]
        self.index(name)
        delattr(self, name)

    def output_shape(self, input_shape):
        """The last child's output shape, each child's output shape being the next one's input shape."""
        for layer in self._modules.values():
            input_shape = layer.output_shape(input_shape)
        return tuple(input_shape)

    def flops(self, input_shape):
        """The sum of the children's FLOPs; None (unknown) if a child does not say."""
        total = 0
        for layer in self._modules.values():
            flops = layer.flops(input_shape)
            if flops is None:
                return None
            total += flops
            input_shape = layer.output_shape(input_shape)
        return total

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_output, need_input_grad=True):
        layers = list(self._modules.values())
        lowest = 0
        if not need_input_grad:
            trainable = [i for i, layer in enumerate(layers) if layer.has_trainable_parameters()]
            if not trainable:
                return None
            lowest = trainable[0]
        grad = grad_output
        for i in range(len(layers) - 1, lowest - 1, -1):
            grad = layers[i].backward(grad, need_input_grad=need_input_grad or i > lowest)
        return grad

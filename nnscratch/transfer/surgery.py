"""Model surgery: a new head (:func:`replace_head`), a body cut off (:func:`cut`) or extended
(:func:`extend`), a first convolution for other images (:func:`adapt_input_channels`)."""
from collections import OrderedDict

import numpy as np

from ..checks import is_int
from ..nn.container import Sequential
from ..nn.conv import Conv2d
from ..nn.dense import Dense
from ..nn.module import Parameter


def _parent_and_name(model, dotted):
    parent = model
    *path, name = dotted.split(".")
    for part in path:
        parent = parent._modules[part]
    return parent, name


def _replace_child(parent, name, layer):
    if isinstance(parent, Sequential):
        parent[name] = layer
    else:
        setattr(parent, name, layer)


def head_name(model, caller="head_name"):
    """The dotted name of the model's head: its last ``Dense`` (``Linear``) layer, e.g. ``"fc2"``.
    This is the layer :func:`replace_head` replaces and the default head of :func:`param_groups`
    and :func:`fine_tune`."""
    heads = [name for name, module in model.named_modules() if isinstance(module, Dense)]
    if not heads:
        raise ValueError(f"{caller}: the model has no Dense layer to take as its head")
    return heads[-1]


def replace_head(model, num_classes, reinit=True, generator=None):
    """
    Replace the output layer (the last ``Dense``) by one with `num_classes` outputs.

    The new ``Dense(in_features, num_classes)`` takes the old layer's name and place (a
    ``LogSoftmax`` after it stays), dtype and bias setting, and is trainable. It is a new
    layer with new :class:`~nnscratch.Parameter` objects: build the optimizer *after*
    calling this (:func:`summary` warns about trainable parameters an optimizer lacks).

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
        Modified in place.
    num_classes : int
        Outputs of the new head.
    reinit : bool
        True (default): the new head is freshly initialized (PyTorch's default init, from
        `generator`). False: output rows ``0 .. min(num_classes, old) - 1`` of the weight
        and bias are copied from the old head (so with the same number of classes the
        values are exactly kept, as Keras' transfer example keeps its last layer; with
        fewer classes the first `num_classes` rows are kept); rows beyond the old number of
        classes, if any, are freshly initialized.
    generator : numpy Generator, optional
        For the initialization (default: the library generator).

    Returns
    -------
    model : the same object
    """
    if not (is_int(num_classes) and num_classes >= 1):
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    parent, name = _parent_and_name(model, head_name(model, "replace_head"))
    old = parent._modules[name]
    new = Dense(old.in_features, num_classes, bias=old.bias is not None, dtype=old.weight.dtype, generator=generator)
    if not reinit:
        rows = min(num_classes, old.out_features)
        new.weight.data[:rows] = old.weight.data[:rows]
        if old.bias is not None:
            new.bias.data[:rows] = old.bias.data[:rows]
    _replace_child(parent, name, new)
    return model


def cut(model, before):
    """
    The layers of `model` that run before the layer `before`, as a new :class:`~nnscratch.Sequential`.

    The layers are *shared*, not copied: training the cut model trains the original.
    ``cut(net, before="fc2")`` of the seed's Net is everything up to the 128 features that
    feed its last layer (fc2 itself is not included); ``cut(net, before="flatten")`` the
    convolutional body.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    before : str or int
        Name (or position, negative counting from the end) of the first layer left out.

    Returns
    -------
    body : :class:`~nnscratch.Sequential`
    """
    return cut_before(model, before, "cut")


def cut_before(model, before, caller):
    """:func:`cut`, naming `caller` in errors (a wrong `before` lists the layer names)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: expected a Sequential model, got {type(model).__name__}")
    names = model.names()
    if isinstance(before, str) and before in names:
        stop = names.index(before)
    elif is_int(before) and -len(names) <= before <= len(names):
        stop = before if before >= 0 else before + len(names)
    else:
        raise ValueError(f"{caller}: before={before!r} is not a layer of the model; `before` names the first layer "
                         f"NOT run, one of {names} (or a position from {-len(names)} to {len(names)})")
    return Sequential(OrderedDict(list(model.named_children())[:stop]))


def extend(model, layers):
    """
    A new :class:`~nnscratch.Sequential`: the layers of `model` (shared) followed by `layers`.

    Together with :func:`cut` this puts a new head on a pre-trained body::

        net = extend(cut(pretrained, before="fc2"), [("fc2", Dense(128, 5)), ("log_softmax", LogSoftmax())])

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    layers : list of (str, Module) or dict
        New layers and their names (which must not repeat the model's).

    Returns
    -------
    extended : :class:`~nnscratch.Sequential`
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"extend: expected a Sequential model, got {type(model).__name__}")
    pairs = list(layers.items()) if isinstance(layers, dict) else list(layers)
    result = Sequential(OrderedDict(model.named_children()))
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"extend: layers must be (name, module) pairs, got {pair!r}")
        result.append(pair[1], pair[0])
    return result


def adapt_input_channels(model, in_channels):
    """
    Make the first ``Conv2d`` accept `in_channels` input channels, keeping what it learned.

    * ``c -> 1`` (e.g. an RGB-trained network on grayscale images): the new kernel is the
      *sum* of the kernels over the input channels. A gray image replicated into ``c``
      channels gives exactly the output the old layer gave, since
      ``Σ_c w_c * x = (Σ_c w_c) * x``.
    * ``1 -> c`` (e.g. an MNIST-trained network on color images): the kernel is *repeated*
      over the ``c`` channels and divided by ``c``. On a gray image replicated into ``c``
      channels the output is unchanged, since ``Σ_c (w / c) * x = w * x``; on color
      images the layer sees the mean of the channels.

    Other conversions raise :class:`ValueError`. The layer keeps its other
    hyper-parameters and its ``requires_grad``; its weight becomes a new
    :class:`~nnscratch.Parameter` (build the optimizer afterwards).

    Returns
    -------
    model : the same object (unchanged if the channels already match)
    """
    if not (is_int(in_channels) and in_channels >= 1):
        raise ValueError(f"adapt_input_channels: in_channels must be a positive int, got {in_channels!r}")
    conv = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
    if conv is None:
        raise ValueError("adapt_input_channels: the model has no Conv2d layer")
    old = conv.in_channels
    if in_channels == old:
        return model
    weight = conv.weight.data
    if in_channels == 1:
        new = weight.sum(axis=1, keepdims=True, dtype=np.float64).astype(weight.dtype)
    elif old == 1:
        new = np.repeat(weight.astype(np.float64) / in_channels, in_channels, axis=1).astype(weight.dtype)
    else:
        raise ValueError(f"adapt_input_channels: can convert between 1 and c input channels, not {old} -> {in_channels}")
    requires_grad = conv.weight.requires_grad
    conv.weight = Parameter(np.ascontiguousarray(new), requires_grad=requires_grad)
    conv.in_channels = in_channels
    return model

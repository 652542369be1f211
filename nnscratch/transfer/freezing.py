"""Freezing: a frozen parameter (``requires_grad`` false) is never changed by training.

Its layer computes no gradient for it, :class:`~nnscratch.SGD` skips it entirely (no update,
momentum or weight decay, even if the optimizer was built before the freeze) and
``Sequential.backward(grad, need_input_grad=False)`` stops at the lowest layer holding a trainable
parameter. :func:`frozen_snapshot` and :func:`assert_frozen_unchanged` check the promise bit for bit.
"""
from collections import OrderedDict

import numpy as np

from ..checks import is_int
from ..nn.container import Sequential
from ..nn.state import as_names, is_under


def selected_parameters(model, layers, caller):
    """Parameters named by ``layers`` (None = all): layer names, dotted module names or parameter names."""
    params = OrderedDict(model.named_parameters())
    if layers is None:
        return list(params.values())
    names = as_names(layers, caller)
    modules = {name for name, _ in model.named_modules()}
    selected = OrderedDict()
    for name in names:
        if name not in modules and name not in params:
            children = list(model._modules)
            raise KeyError(f"{caller}: the model has no layer or parameter {name!r}; its layers are {children}")
        for pname, param in params.items():
            if is_under(pname, [name]):
                selected[id(param)] = param
    return list(selected.values())


def freeze(model, layers=None):
    """
    Freeze layers: their parameters get ``requires_grad = False``.

    A frozen parameter is never changed by training: its layer skips computing its
    gradient, :class:`~nnscratch.SGD` skips it (no update, momentum or weight decay, also
    if the optimizer was built before the freeze) and backward stops below the lowest
    trainable layer. This is how a pre-trained body is used as a fixed feature extractor.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    layers : str, list of str or None
        Layer names (``"conv1"``), dotted names of nested layers, or single parameters
        (``"fc1.bias"``); ``None`` (default) freezes every parameter.

    Returns
    -------
    model : the same object
    """
    for param in selected_parameters(model, layers, "freeze"):
        param.requires_grad = False
    return model


def unfreeze(model, layers=None):
    """Make layers trainable again (``requires_grad = True``); same `layers` as :func:`freeze`.
    Returns `model`."""
    for param in selected_parameters(model, layers, "unfreeze"):
        param.requires_grad = True
    return model


def freeze_to(model, name):
    """
    Freeze every layer *before* `name`; unfreeze `name` and every layer after it.

    fastai's ``Learner.freeze_to``: ``freeze_to(model, "fc1")`` trains the dense layers
    only; ``freeze_to(model, "conv2")`` also fine-tunes the second convolution. Moving the
    boundary down step by step is *gradual unfreezing*.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    name : str or int
        A child's name, or its position (negative counts from the end, as fastai's
        ``freeze_to(-1)``: only the last layer trains).

    Returns
    -------
    model : the same object
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"freeze_to: expected a Sequential model, got {type(model).__name__}")
    if isinstance(name, str):
        boundary = model.index(name)
    elif is_int(name) and -len(model) <= name < len(model):
        boundary = name % len(model)
    else:
        raise KeyError(f"freeze_to: {name!r} is neither a layer name nor a position; layers are {model.names()}")
    for position, layer in enumerate(model):
        layer.requires_grad_(position >= boundary)
    return model


def frozen_parameters(model):
    """Names of the frozen parameters (``requires_grad`` false), in model order."""
    return [name for name, param in model.named_parameters() if not param.requires_grad]


def trainable_parameters(model):
    """Names of the trainable parameters, in model order."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def frozen_snapshot(model):
    """
    Copy the values of every frozen parameter, to check later that nothing changed them.

    Returns
    -------
    snapshot : dict of str to ndarray
        ``{name: copy of .data}`` for each parameter with ``requires_grad`` false.
    """
    return OrderedDict((name, param.data.copy()) for name, param in model.named_parameters()
                       if not param.requires_grad)


def assert_frozen_unchanged(model, snapshot):
    """
    Check that the parameters of a :func:`frozen_snapshot` are *bit-identical* now.

    Compares dtypes, shapes and raw bytes (so ``-0.0`` versus ``0.0`` or a changed NaN
    payload count as changes).

    Raises
    ------
    AssertionError
        Naming every changed (or vanished) parameter with its largest absolute change.
    """
    params = dict(model.named_parameters())
    changed = []
    for name, before in snapshot.items():
        param = params.get(name)
        if param is None:
            changed.append(f"{name} (no longer in the model)")
            continue
        now = param.data
        if now.dtype != before.dtype or now.shape != before.shape:
            changed.append(f"{name} ({before.dtype}{before.shape} became {now.dtype}{now.shape})")
        elif np.ascontiguousarray(now).tobytes() != np.ascontiguousarray(before).tobytes():
            diff = np.abs(now.astype(np.float64) - before.astype(np.float64))
            changed.append(f"{name} (max |change| {np.nanmax(diff) if diff.size else 0:.3g}, "
                           f"{int(np.count_nonzero(now != before))} of {now.size} values)")
    if changed:
        raise AssertionError("frozen parameters changed: " + "; ".join(changed))

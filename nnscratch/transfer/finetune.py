"""Fine-tuning: discriminative learning rates (:func:`param_groups`) and fastai's two-phase
:func:`fine_tune` (the head alone on a frozen body, then everything)."""
from ..nn.dense import Dense
from ..nn.state import as_names
from ..optim import SGD
from ..training import History, fit
from .freezing import freeze, selected_parameters, unfreeze
from .surgery import head_name


def param_groups(model, lr, body_lr=None, head=None):
    """
    Parameter groups for :class:`~nnscratch.SGD` with *discriminative learning rates*.

    Pre-trained layers already hold good features and should move slowly; the new head
    starts from random values and needs a larger step. So the head layers train at `lr`
    and every other parameter (the body) at `body_lr`, typically 10 to 100 times smaller.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    lr : float
        Learning rate of the head.
    body_lr : float, optional
        Learning rate of the rest; default `lr`.
    head : str, tuple of str or None
        Names (or prefixes) of the head layers; None (default): the last ``Dense``, the layer
        :func:`replace_head` replaces (:func:`head_name`).

    Returns
    -------
    groups : list of dict
        ``[{"name": "body", "params": [...], "lr": body_lr}, {"name": "head", "params": [...], "lr": lr}]``;
        ``SGD(groups, lr=lr, momentum=0.9)``. All parameters are included, frozen ones too
        (SGD skips them while frozen, so one optimizer serves every phase of a fine-tuning).
    """
    head_ids = {id(p) for p in selected_parameters(model, _head_names(model, head, "param_groups"), "param_groups")}
    params = list(model.parameters())
    return [
        {"name": "body", "params": [p for p in params if id(p) not in head_ids], "lr": lr if body_lr is None else body_lr},
        {"name": "head", "params": [p for p in params if id(p) in head_ids], "lr": lr},
    ]


def _head_names(model, head, caller):
    """`head` as a list of layer names (None: :func:`head_name`); a ValueError naming `head=` and the
    model's layers when one is not a layer or parameter of the model."""
    if head is None:
        return [head_name(model, caller)]
    names = as_names(head, f"{caller}: head")
    known = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
    wrong = [name for name in names if name not in known]
    if wrong or not names:
        layers = [name for name, _ in model.named_modules() if name]
        denses = [name for name, module in model.named_modules() if isinstance(module, Dense)]
        hint = f"; head=None takes the last Dense layer, {denses[-1]!r} (the one replace_head replaces)" if denses else ""
        raise ValueError(f"{caller}: head={head!r} names no layer of the model; its layers are {layers}{hint}")
    return names


def fine_tune(model, criterion, train_loader, *, head_epochs, full_epochs, lr, body_lr, momentum=0.9,
              head=None, val_loader=None, progress=False, weight_decay=0.0):
    """
    Fine-tune a pre-trained network in two phases (fastai's ``fine_tune``).

    1. ``head_epochs`` epochs with the body frozen: only the (new, random) head trains, at
       `lr`, so its first large, noisy gradients cannot wreck the pre-trained features.
    2. ``full_epochs`` epochs with everything unfrozen: the body at `body_lr`, the head at
       `lr` (:func:`param_groups`).

    One :class:`~nnscratch.SGD` serves both phases (it skips the frozen body in phase 1).
    Afterwards every parameter is trainable, unless ``full_epochs == 0``: then the body
    stays frozen (a pure feature-extraction training).

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
        With its head already in place (:func:`replace_head`).
    criterion : loss
    train_loader : iterable of (x, y)
    head_epochs, full_epochs : int
    lr, body_lr : float
        Learning rates of the head and of the body.
    momentum, weight_decay : float
    head : str, tuple of str or None
        The head layers; None (default): the last ``Dense``, as :func:`param_groups`.
    val_loader : iterable of (x, y), optional
    progress : bool

    Returns
    -------
    history : :class:`~nnscratch.History`
        Both phases (:meth:`~nnscratch.History.extend`): the first `head_epochs` epochs, and
        their ``sum(epoch_batches[:head_epochs])`` steps of ``batch_loss``, are phase 1.
    """
    head = _head_names(model, head, "fine_tune")
    optimizer = SGD(param_groups(model, lr, body_lr, head), lr=lr, momentum=momentum, weight_decay=weight_decay)
    freeze(model)
    unfreeze(model, head)
    first = fit(model, criterion, optimizer, train_loader, int(head_epochs), val_loader, progress=progress)
    second = History()
    if full_epochs:
        unfreeze(model)
        second = fit(model, criterion, optimizer, train_loader, int(full_epochs), val_loader, progress=progress)
    return History().extend(first).extend(second)

"""Fine-tuning: discriminative learning rates (:func:`param_groups`) and fastai's two-phase
:func:`fine_tune` (the head alone on a frozen body, then everything)."""
import numbers

from ..checks import int_in_range, short_repr
from ..nn.dense import Dense
from ..nn.state import as_names
from ..optim import SGD
from ..optim.lr_scheduler import MultiStepLR
from ..training import fit
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
              head=None, val_loader=None, progress=False, weight_decay=0.0,
              head_milestones=(), full_milestones=(), gamma=0.1):
    """
    Fine-tune a pre-trained network in two phases (fastai's ``fine_tune``).

    1. ``head_epochs`` epochs with the body frozen: only the (new, random) head trains, at
       `lr`, so its first large, noisy gradients cannot wreck the pre-trained features.
    2. ``full_epochs`` epochs with everything unfrozen: the body at `body_lr`, the head at
       `lr` (:func:`param_groups`).

    One :class:`~nnscratch.SGD` serves both phases (it skips the frozen body in phase 1).
    Afterwards every parameter is trainable, unless ``full_epochs == 0``: then the body
    stays frozen (a pure feature-extraction training).

    Each phase may lower its learning rates at milestones, as PyTorch's
    ``MultiStepLR(optimizer, milestones, gamma)`` stepped after every epoch (:func:`~nnscratch.fit`
    does it): in a phase with milestones ``[m1, m2, ...]`` (epochs counted from the start of that
    phase), every rate is multiplied by `gamma` after ``m1`` epochs, again after ``m2``, ...:

    .. math::
        lr_e = lr · γ^{\\#\\{m \\in milestones : m \\le e\\}}, \\qquad
        body\\_lr_e = body\\_lr · γ^{\\#\\{m \\in milestones : m \\le e\\}}

    for the phase's epoch ``e`` (counting from 0). Phase 2 starts again from `lr` and
    `body_lr`, whatever phase 1's milestones did. E.g. ``full_epochs=4, full_milestones=[3]``
    trains the last epoch of phase 2 at ``lr / 10`` and ``body_lr / 10``. Without milestones (the
    default) the rates stay constant.

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
    head_milestones, full_milestones : sequence of int
        Epochs of phase 1 and of phase 2 (counted from the phase's start) after which the rates
        are multiplied by `gamma`; each between 1 and the phase's epochs minus 1 (at 0 it would
        only mean lower starting rates, at the phase's end it would change nothing), refused
        otherwise. Default: none.
    gamma : float
        Factor of each drop, in (0, 1]; default 0.1.

    Returns
    -------
    history : :class:`~nnscratch.History`
        Both phases (:meth:`~nnscratch.History.extend`): the first `head_epochs` epochs, and
        their ``sum(epoch_batches[:head_epochs])`` steps of ``batch_loss``, are phase 1.
    """
    head = _head_names(model, head, "fine_tune")
    head_milestones = _milestones(head_milestones, head_epochs, "head")
    full_milestones = _milestones(full_milestones, full_epochs, "full")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < gamma <= 1:
        raise ValueError(f"fine_tune: gamma (the factor of each learning-rate drop) must be a number in (0, 1], "
                         f"got {short_repr(gamma)}")
    optimizer = SGD(param_groups(model, lr, body_lr, head), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rates = [group["lr"] for group in optimizer.param_groups]
    freeze(model)
    unfreeze(model, head)
    history = fit(model, criterion, optimizer, train_loader, int(head_epochs), val_loader, progress=progress,
                  scheduler=MultiStepLR(optimizer, head_milestones, gamma))
    if full_epochs:
        unfreeze(model)
        for group, rate in zip(optimizer.param_groups, rates):  # phase 2 starts from the given rates again,
            group["lr"] = rate                                  # whatever phase 1's milestones did
        history.extend(fit(model, criterion, optimizer, train_loader, int(full_epochs), val_loader, progress=progress,
                           scheduler=MultiStepLR(optimizer, full_milestones, gamma)))
    return history


def _milestones(milestones, epochs, phase):
    """fine_tune's `<phase>_milestones` as a list of ints in [1, epochs - 1], or a ValueError naming it."""
    if not isinstance(milestones, (list, tuple)):
        raise ValueError(f"fine_tune: {phase}_milestones must be a list of epochs, got {short_repr(milestones)}")
    return [int_in_range(m, 1, int(epochs) - 1, f"fine_tune: {phase}_milestones[{i}] (after milestone m of a phase of "
                                                f"{phase}_epochs={int(epochs)}, the rates are multiplied by gamma)")
            for i, m in enumerate(milestones)]

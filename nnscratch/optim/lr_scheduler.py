"""Learning-rate schedules, as ``torch.optim.lr_scheduler``: ``StepLR``, ``MultiStepLR``, ``LambdaLR``.

Reached as ``nnscratch.optim.lr_scheduler``. A scheduler changes the ``lr`` of every parameter
group of an optimizer once per epoch, in PyTorch's order::

    scheduler = StepLR(optimizer, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)            # the optimizer's steps of the epoch
        scheduler.step()      # then the schedule moves on by one epoch

(:func:`nnscratch.fit` does this when given ``scheduler=``). Building a scheduler records each
group's current ``lr`` as its ``base_lr`` and sets ``last_epoch = 0``; each ``step()`` adds one
to ``last_epoch`` and sets the new rates. As PyTorch's, ``StepLR`` and ``MultiStepLR`` are
*chainable*: at a drop they multiply the group's current ``lr`` by ``gamma`` (so the numbers are
bit-identical to PyTorch's), which equals the closed form in their docstrings unless something
else changed the ``lr`` meanwhile.

``state_dict()`` holds numbers only (``LambdaLR``'s function is not saved: a checkpoint never
names code; build the scheduler with the same function and load the state into it).
"""
import bisect
import math
import numbers

from ..checks import int_in_range, short_repr

__all__ = ["LRScheduler", "LambdaLR", "MultiStepLR", "StepLR"]

MAX_EPOCH = 1_000_000
"""Largest ``last_epoch`` (and step size or milestone) a state may hold."""


class LRScheduler:
    """Base class: keeps ``base_lrs`` (one per parameter group), ``last_epoch`` and the last rates set.
    Subclasses give :meth:`get_lr` (the rates for ``last_epoch``) and their hyper-parameters in
    ``HYPER`` (passed to this constructor by name, checked by ``_check_hyper``, saved in :meth:`state_dict`)."""

    HYPER = ()

    def __init__(self, optimizer, **hyper):
        for name, value in self._check_hyper(**hyper, where=type(self).__name__).items():
            setattr(self, name, value)
        groups = _param_groups(optimizer, type(self).__name__)
        self.optimizer = optimizer
        self.base_lrs = [_check_rate(g["lr"], f"{type(self).__name__}: group {i} lr") for i, g in enumerate(groups)]
        self.last_epoch = 0
        self._set(self.get_lr())

    def get_lr(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rate of each parameter group, as set by the last ``step()`` (or construction)."""
        return list(self._last_lr)

    def step(self):
        """One epoch more: ``last_epoch += 1``, then every group's ``lr`` set by the schedule."""
        self.last_epoch += 1
        self._set(self.get_lr())

    def _set(self, rates):
        for i, (group, lr) in enumerate(zip(self.optimizer.param_groups, rates)):
            group["lr"] = _check_rate(lr, f"{type(self).__name__}: the rate of group {i} at epoch {self.last_epoch}")
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self):
        """``last_epoch``, ``base_lrs``, ``_last_lr`` and the hyper-parameters: plain numbers and lists."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": list(self._last_lr),
                **{name: _copy(getattr(self, name)) for name in self.HYPER}}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned. Everything is checked first (the keys, ``last_epoch``
        an int in [0, :data:`MAX_EPOCH`], one finite rate >= 0 per parameter group, the hyper-parameters
        as the constructor checks them), so a refused state leaves the scheduler as it was."""
        state = self.checked_state(state_dict)
        for name, value in state.items():
            setattr(self, name, value)

    def checked_state(self, state_dict, where=None):
        """The attributes :meth:`load_state_dict` would set, after checking them all; raises ``ValueError``."""
        where = where or f"{type(self).__name__}.load_state_dict"
        keys = {"last_epoch", "base_lrs", "_last_lr", *self.HYPER}
        if not isinstance(state_dict, dict) or set(state_dict) != keys:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{where}: expected a dict with the keys {sorted(keys)}, got {found}")
        last_epoch = _check_int(state_dict["last_epoch"], 0, f"{where}: last_epoch")
        rates = {}
        for name in ("base_lrs", "_last_lr"):
            values = state_dict[name]
            if not isinstance(values, list) or len(values) != len(self.optimizer.param_groups):
                raise ValueError(f"{where}: {name} must be a list of {len(self.optimizer.param_groups)} rates (one "
                                 f"per parameter group), got {short_repr(values)}")
            rates[name] = [_check_rate(v, f"{where}: {name}[{i}]") for i, v in enumerate(values)]
        hyper = self._check_hyper(**{name: state_dict[name] for name in self.HYPER}, where=where)
        return {"last_epoch": last_epoch, **rates, **hyper}

    def _check_hyper(self, where):
        return {}

    def __repr__(self):
        hyper = "".join(f", {name}={getattr(self, name)}" for name in self.HYPER)
        return f"{type(self).__name__}(last_epoch={self.last_epoch}{hyper}, last_lr={self._last_lr})"


class StepLR(LRScheduler):
    """Decay every group's rate by ``gamma`` every ``step_size`` epochs, as ``torch.optim.lr_scheduler.StepLR``:

    .. math::
        lr = base\\_lr · γ^{\\lfloor epoch / step\\_size \\rfloor}

    e.g. ``StepLR(opt, step_size=30, gamma=0.1)`` with lr 0.05: 0.05 for epochs 0-29, 0.005 for 30-59, ...
    """

    HYPER = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]

    def _check_hyper(self, step_size, gamma, where):
        return {"step_size": _check_int(step_size, 1, f"{where}: step_size"), "gamma": _check_rate(gamma, f"{where}: gamma")}


class MultiStepLR(LRScheduler):
    """Decay every group's rate by ``gamma`` at each milestone epoch, as ``torch.optim.lr_scheduler.MultiStepLR``:

    .. math::
        lr = base\\_lr · γ^{\\#\\{m \\in milestones : m \\le epoch\\}}

    e.g. ``MultiStepLR(opt, milestones=[30, 80], gamma=0.1)`` with lr 0.05: 0.05 for epochs 0-29,
    0.005 for 30-79, 0.0005 from 80 on. As PyTorch's, the milestones are kept sorted and one given twice
    counts twice (``γ²`` there).
    """

    HYPER = ("milestones", "gamma")

    def __init__(self, optimizer, milestones, gamma=0.1):
        super().__init__(optimizer, milestones=milestones, gamma=gamma)

    def get_lr(self):
        groups = self.optimizer.param_groups
        count = bisect.bisect_right(self.milestones, self.last_epoch) - bisect.bisect_left(self.milestones, self.last_epoch)
        if not count:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma ** count for group in groups]

    def _check_hyper(self, milestones, gamma, where):
        if not isinstance(milestones, (list, tuple)) or len(milestones) > 10_000:
            raise ValueError(f"{where}: milestones must be a list of epochs, got {short_repr(milestones)}")
        milestones = sorted(_check_int(m, 0, f"{where}: milestones[{i}]") for i, m in enumerate(milestones))
        return {"milestones": milestones, "gamma": _check_rate(gamma, f"{where}: gamma")}


class LambdaLR(LRScheduler):
    """Set each group's rate to its base rate times a function of the epoch, as
    ``torch.optim.lr_scheduler.LambdaLR``:

    .. math::
        lr = base\\_lr · λ(epoch)

    ``lr_lambda`` is one function or a list of one per parameter group, e.g.
    ``LambdaLR(opt, lambda epoch: 0.95 ** epoch)``. Its result must be a finite number >= 0.
    The function is not part of :meth:`state_dict`.
    """

    def __init__(self, optimizer, lr_lambda):
        groups = _param_groups(optimizer, "LambdaLR")
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * len(groups)
        if len(lambdas) != len(groups) or not all(callable(f) for f in lambdas):
            raise ValueError(f"LambdaLR: lr_lambda must be a function or a list of {len(groups)} functions "
                             f"(one per parameter group), got {short_repr(lr_lambda)}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer)

    def get_lr(self):
        return [base * _check_rate(f(self.last_epoch), f"LambdaLR: lr_lambda({self.last_epoch}) of group {i}")
                for i, (base, f) in enumerate(zip(self.base_lrs, self.lr_lambdas))]


def _param_groups(optimizer, where):
    """The optimizer's ``param_groups``, each a dict holding an ``lr``; raises ``TypeError`` otherwise."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) and "lr" in g for g in groups):
        raise TypeError(f"{where}: expected an optimizer with param_groups holding an 'lr' "
                        f"(e.g. nnscratch.SGD), got {type(optimizer).__name__}")
    return groups


def _check_rate(value, where):
    """A finite real number >= 0 (a learning rate or a factor), as a float."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0):
        raise ValueError(f"{where} must be a finite number >= 0, got {short_repr(value)}")
    return float(value)


def _check_int(value, low, where):
    """An int in [low, MAX_EPOCH] (not a bool, not a float)."""
    return int_in_range(value, low, MAX_EPOCH, where)


def _copy(value):
    return list(value) if isinstance(value, list) else value



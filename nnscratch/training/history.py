"""``History``: what :func:`nnscratch.fit` measured, per epoch and per training step.

Saved as plain JSON (:meth:`History.as_dict`) in every checkpoint's header, so a resumed run
carries its whole learning curve; :func:`nnscratch.plot.history` draws it.
"""
import math
from dataclasses import dataclass, field

__all__ = ["History"]


@dataclass
class History:
    """Metrics of :func:`fit`: one list entry per epoch completed, and the loss of every step.

    ``train_loss`` is the mean loss over the epoch's training samples and ``train_accuracy``
    the fraction of them classified right (argmax of the outputs, measured during training,
    i.e. with dropout active; NaN when the targets are not class labels). ``val_loss`` and
    ``val_accuracy`` are filled when ``fit`` is given a ``val_loader`` (evaluated after each
    epoch, in eval mode). Accuracies are fractions in [0, 1]. ``epoch_time`` is each epoch's
    wall time in seconds (training plus validation); ``total_time`` the wall time of all
    ``fit`` calls that produced it, resumed runs included.

    ``batch_loss`` holds one entry per training step, across all epochs in order: the batch's
    loss as the criterion returned it (so a one-epoch run still has a learning curve), and
    ``epoch_batches`` the number of steps of each epoch (``sum(epoch_batches) ==
    len(batch_loss)``; step ``i`` lies in epoch ``np.searchsorted(np.cumsum(epoch_batches), i,
    side="right") + 1``).
    """

    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)
    total_time: float = 0.0
    batch_loss: list = field(default_factory=list)
    epoch_batches: list = field(default_factory=list)

    LISTS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time")
    """The per-epoch lists of floats (``epoch_batches`` is per epoch too, of ints)."""

    @property
    def epochs(self):
        """Number of epochs recorded."""
        return len(self.train_loss)

    def extend(self, other):
        """Append `other`'s epochs and steps after this history's (and add its time); return self."""
        for name in self.LISTS + ("batch_loss", "epoch_batches"):
            getattr(self, name).extend(getattr(other, name))
        self.total_time += other.total_time
        return self

    def as_dict(self):
        """Plain, strict-JSON-friendly dict (lists of floats; NaN or infinity become ``None``)."""
        result = {name: [_json_float(v) for v in getattr(self, name)] for name in self.LISTS + ("batch_loss",)}
        result["epoch_batches"] = [int(n) for n in self.epoch_batches]
        result["total_time"] = _json_float(self.total_time)
        return result

    @classmethod
    def from_dict(cls, data, where="History.from_dict"):
        """Inverse of :meth:`as_dict` (``None`` comes back as NaN). A dict saved before
        ``batch_loss`` and ``epoch_batches`` existed gives them empty.

        `data` is checked first, as it may come from a file (`where` names it in the errors):
        the keys of :meth:`as_dict` only; lists of at most :data:`MAX_ENTRIES` numbers (or
        ``None``), ``epoch_batches`` of non-negative ints summing to ``len(batch_loss)``, and a
        ``total_time`` >= 0. A ``ValueError`` says which entry is wrong otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a history must be a JSON object, got {type(data).__name__}")
        floats = cls.LISTS + ("batch_loss",)
        unknown = set(data) - set(floats) - {"epoch_batches", "total_time"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)[:10]}")
        lists = {name: [_read_float(v, f"{where}: {name}[{i}]") for i, v in enumerate(_read_list(data, name, where))]
                 for name in floats}
        epoch_batches = [_read_count(n, f"{where}: epoch_batches[{i}]")
                         for i, n in enumerate(_read_list(data, "epoch_batches", where))]
        if epoch_batches and sum(epoch_batches) != len(lists["batch_loss"]):
            raise ValueError(f"{where}: epoch_batches sum to {sum(epoch_batches)} steps but batch_loss holds "
                             f"{len(lists['batch_loss'])}")
        total = _read_float(data.get("total_time", 0.0), f"{where}: total_time")
        if total < 0:
            raise ValueError(f"{where}: total_time must be >= 0, got {total}")
        return cls(**lists, epoch_batches=epoch_batches, total_time=total)


MAX_ENTRIES = 10_000_000
"""Longest list :meth:`History.from_dict` accepts (ten million steps: 160 days of 1 ms steps)."""


def _read_list(data, name, where):
    values = data.get(name, [])
    if not isinstance(values, list):
        raise ValueError(f"{where}: {name} must be a list, got {type(values).__name__}")
    if len(values) > MAX_ENTRIES:
        raise ValueError(f"{where}: {name} has {len(values)} entries, more than the limit of {MAX_ENTRIES}")
    return values


def _read_float(value, where):
    """A number (or ``None``, meaning NaN) as a float; booleans, strings and the like are refused."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number or null, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{where}: {str(value)[:40]}... is too large for a float") from None


def _read_count(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**53:
        raise ValueError(f"{where}: expected an integer in [0, 2**53], got {str(value)[:40]!r}")
    return value


def _json_float(value):
    value = float(value)
    return value if math.isfinite(value) else None

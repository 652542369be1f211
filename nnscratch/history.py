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
    def from_dict(cls, data):
        """Inverse of :meth:`as_dict` (``None`` comes back as NaN). A dict saved before
        ``batch_loss`` and ``epoch_batches`` existed gives them empty."""
        floats = cls.LISTS + ("batch_loss",)
        unknown = set(data) - set(floats) - {"epoch_batches", "total_time"}
        if unknown:
            raise ValueError(f"History.from_dict: unknown keys {sorted(unknown)}")
        lists = {name: [math.nan if v is None else float(v) for v in data.get(name, [])] for name in floats}
        total = data.get("total_time", 0.0)
        return cls(**lists, epoch_batches=[int(n) for n in data.get("epoch_batches", [])],
                   total_time=math.nan if total is None else float(total))


def _json_float(value):
    value = float(value)
    return value if math.isfinite(value) else None

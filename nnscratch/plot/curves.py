"""Training and evaluation: learning curves, the confusion matrix, the most confident mistakes, accuracy against labels."""
import itertools

import numpy as np
from matplotlib.ticker import MaxNLocator

from .figure import CURVE_STYLES, _figure, _image_list, _labelled, _one_panel, _probabilities
from .images import _image_grid


def history(history, *, ax=None, title=None, logy=False):
    """Learning curves of a :class:`nnscratch.History` (what ``fit`` returns); the x axis counts epochs.

    Left, the loss: a thin line per training batch (noisy: each batch is a small sample), the
    mean over each epoch as circles at the epoch's end (it sits above that epoch's last batches
    while the loss falls, since it averages the whole epoch), and the validation loss as squares.
    Right, when known, the accuracy per epoch in %: training (measured during the epoch, dropout
    on) and validation (eval mode). Validation far above training loss means overfitting.
    With ``ax``, only the loss is drawn, on that axes. ``logy=True`` puts the loss on a log
    scale, for losses that fall by orders of magnitude (regression, e.g. MSE).
    """
    epochs = len(history.train_loss)
    batch_loss = list(getattr(history, "batch_loss", None) or [])
    epoch_batches = list(getattr(history, "epoch_batches", None) or [])
    if epochs == 0 and not batch_loss:
        raise ValueError("plot.history: the history is empty (no epoch was completed)")
    if batch_loss and sum(epoch_batches) != len(batch_loss):
        raise ValueError(f"plot.history: history.batch_loss has {len(batch_loss)} entries but "
                         f"history.epoch_batches {epoch_batches} adds up to {sum(epoch_batches)}")
    accuracy = {"train": np.asarray(history.train_accuracy, dtype=float),
                "validation": np.asarray(history.val_accuracy, dtype=float)}
    show_accuracy = ax is None and any(np.isfinite(a).any() for a in accuracy.values())
    if ax is None:
        fig = _figure(10 if show_accuracy else 5.5, 3.8)
        panels = fig.subplots(1, 1 + show_accuracy, squeeze=False)[0]
    else:
        fig, panels = ax.figure, [ax]

    loss_ax, ends = panels[0], np.arange(1, epochs + 1)
    if batch_loss:
        positions = np.concatenate([e + np.arange(1, n + 1) / n for e, n in enumerate(epoch_batches) if n])
        loss_ax.plot(positions, batch_loss, linewidth=0.6, alpha=0.5, label="train, per batch")
    loss_ax.plot(ends, history.train_loss, "o-", label="train, epoch mean")
    if len(history.val_loss):
        loss_ax.plot(ends[:len(history.val_loss)], history.val_loss, "s-", label="validation")
    loss_ax.set(ylabel="loss", title="Loss", yscale="log" if logy else "linear")
    if show_accuracy:
        for (name, values), marker in zip(accuracy.items(), "os"):
            if np.isfinite(values).any():
                panels[1].plot(ends[:len(values)], 100 * values, marker + "-", label=name)
        panels[1].set(ylabel="accuracy (%)", title="Accuracy")
    for panel in panels:
        panel.set(xlabel="epoch", xlim=(0, max(epochs, 1) + 0.1))
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.grid(alpha=0.3)
        panel.legend()
    if title:
        fig.suptitle(title)
    return fig


def confusion_matrix(y_true, y_pred, *, labels=None, normalize=False, ax=None):
    """Counts of (true class, predicted class): rows are the true labels, columns the predictions.

    The diagonal holds the right answers; a large number off the diagonal in row i, column j
    means "i is often taken for j". With ``normalize=True`` each row is divided by its total, so
    the diagonal reads as each class's recall (cells annotated as fractions). ``labels``: names
    of the classes 0, 1, ... (e.g. ``[str(d) for d in range(5, 10)]`` for digits relabelled 0-4).
    The title gives the overall accuracy.
    """
    y_true, y_pred = _labelled(y_true, y_pred, None, "confusion_matrix")
    classes = len(labels) if labels is not None else int(max(y_true.max(), y_pred.max())) + 1
    if max(y_true.max(), y_pred.max()) >= classes:
        raise ValueError(f"plot.confusion_matrix: {len(labels)} labels given, but the classes go up to "
                         f"{max(y_true.max(), y_pred.max())}")
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    fig, ax = _one_panel(ax, (0.45 * classes + 2.2, 0.45 * classes + 1.6))
    ax.imshow(shown, cmap="Blues", vmin=0)
    dark = 0.5 * shown.max()
    for (i, j), value in np.ndenumerate(shown):
        ax.text(j, i, f"{value:.2f}" if normalize else str(value), ha="center", va="center", fontsize=8,
                color="white" if value > dark else "black")
    names = [str(name) for name in (labels if labels is not None else range(classes))]
    ax.set_xticks(range(classes), names)
    ax.set_yticks(range(classes), names)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"accuracy {np.mean(y_true == y_pred):.2%} of {len(y_true)}")
    return fig


def misclassified(images, y_true, y_pred, proba=None, *, n=16, ncols=8, labels=None):
    """The mistakes (``y_pred != y_true``), each titled "true→predicted".

    With ``proba`` (N, classes) probabilities (e.g. ``np.exp`` of a LogSoftmax output), the
    mistakes are ordered most confident first and the title adds p, the probability the model
    gave its wrong answer: the top ones are the model's worst errors (or wrong labels in the data).
    Without it they come in the order of ``images``. At most ``n`` are shown.
    ``images``: (N, H, W) or (N, 1, H, W), as for :func:`images`; ``labels``: class names.
    """
    pictures = _image_list(images, "misclassified")
    y_true, y_pred = _labelled(y_true, y_pred, len(pictures), "misclassified")
    wrong = np.flatnonzero(y_true != y_pred)
    if proba is not None:
        proba = _probabilities(proba, len(pictures), "misclassified")
        wrong = wrong[np.argsort(-proba[wrong, y_pred[wrong]], kind="stable")]
    if not len(wrong):
        fig, ax = _one_panel(None, (4, 1))
        ax.text(0.5, 0.5, f"no mistakes among {len(pictures)} images", ha="center", va="center")
        ax.set_axis_off()
        return fig
    shown = wrong[:n]
    name = (lambda c: str(labels[c])) if labels is not None else str
    titles = [f"{name(y_true[i])}→{name(y_pred[i])}" + ("" if proba is None else f" p={proba[i, y_pred[i]]:.2f}")
              for i in shown]
    order = ", most confident first" if proba is not None else ""
    suptitle = f"{len(wrong)} mistakes of {len(pictures)} (true→predicted{order})"
    return _image_grid([pictures[i] for i in shown], titles, ncols, None, False, suptitle)


def accuracy_vs_labels(budgets, curves, *, ax=None, xticklabels=None, title=None,
                       ylabel="test accuracy (%)", xlabel="labelled training images per class"):
    """Accuracy against the number of labelled examples, one curve per training strategy.

    ``budgets``: the x values (e.g. labels per class: 10, 100, 1000); ``curves``: a dict
    name -> one list per budget of the accuracies in [0, 1] measured over seeds. Each point is the
    mean in %, its error bar ± one standard deviation over the seeds (none with a single seed).
    The x axis is logarithmic: each step right is ten times more labels. Where two curves' bars
    overlap, the difference between them is within the seed-to-seed noise.
    """
    budgets = np.asarray(budgets, dtype=float)
    if budgets.ndim != 1 or not len(budgets) or budgets.min() <= 0:
        raise ValueError(f"plot.accuracy_vs_labels: budgets must be positive numbers (a log axis), got {budgets}")
    if not curves:
        raise ValueError("plot.accuracy_vs_labels: curves is empty; expected a dict name -> accuracies per budget")
    fig, ax = _one_panel(ax, (6.4, 4.4))
    for (name, per_budget), style in zip(curves.items(), itertools.cycle(CURVE_STYLES)):
        if len(per_budget) != len(budgets):
            raise ValueError(f"plot.accuracy_vs_labels: curve {name!r} has {len(per_budget)} entries, "
                             f"expected one per budget ({len(budgets)})")
        runs = [np.atleast_1d(np.asarray(values, dtype=float)) for values in per_budget]
        if any(r.size == 0 or r.min() < 0 or r.max() > 1 for r in runs):
            raise ValueError(f"plot.accuracy_vs_labels: curve {name!r} needs accuracies in [0, 1] "
                             "(fractions, not %), at least one per budget")
        means = np.array([100 * r.mean() for r in runs])
        sds = np.array([100 * r.std(ddof=1) if r.size > 1 else 0.0 for r in runs])
        ax.errorbar(budgets, means, yerr=sds, capsize=3, label=name, **style)
    ax.set_xscale("log")
    ax.set_xticks(budgets, xticklabels if xticklabels is not None else [f"{b:g}" for b in budgets])
    ax.set_xticks([], minor=True)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "Accuracy vs labels (mean ± sd over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig

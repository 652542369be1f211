"""Figures a learner looks at: images and filters, feature maps, learning curves, the confusion
matrix, the most confident mistakes, and accuracy against the number of labels.

Every function returns a :class:`matplotlib.figure.Figure` and shows nothing itself. In a Jupyter
notebook a figure displays once when it is the last expression of a cell (or with
``display(fig)``); in a script, save it with ``fig.savefig("name.png")``. The figures are created
without pyplot, so pyplot never shows them a second time and ``plt.show()`` does not know them;
nothing here changes the backend or ``rcParams``. Use it as::

    from nnscratch import plot
    plot.history(history)
    plot.confusion_matrix(y_true, y_pred)
"""
import io
import itertools
import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..nn.container import Sequential
from ..nn.module import Parameter

# Line styles of accuracy_vs_labels: curves that lie on top of each other stay distinguishable.
CURVE_STYLES = ({"marker": "o", "linestyle": "-"}, {"marker": "s", "linestyle": "--"},
                {"marker": "D", "linestyle": ":"}, {"marker": "^", "linestyle": "-."})
CELL = 1.3  # inches per image of a grid
BAR_LIMIT = 256  # a vector of feature_maps longer than this is drawn as a colour strip, not bars


class _Figure(Figure):
    """A Figure that shows itself in Jupyter as a PNG even when pyplot's inline backend was never
    started (when it was, IPython uses that backend's own PNG renderer instead: one image either way)."""

    def _repr_png_(self):
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _figure(width, height):
    return _Figure(figsize=(width, height), layout="constrained")


def _one_panel(ax, size):
    """``(figure, axes)``: the caller's ``ax`` and its figure, or a new figure of ``size`` inches."""
    if ax is not None:
        return ax.figure, ax
    fig = _figure(*size)
    return fig, fig.add_subplot()


def _symmetric_scale(arrays):
    """Colour arguments of imshow: blue negative, white 0, red positive, one scale for all arrays."""
    largest = max(float(np.abs(a).max()) for a in arrays) or 1.0
    return {"cmap": "RdBu_r", "vmin": -largest, "vmax": largest}


# ---------------------------------------------------------------------------------------------
# Checking what the learner passed
# ---------------------------------------------------------------------------------------------

def _image_list(arrays, function):
    """A list of 2-D arrays from (N, H, W), (N, 1, H, W), one (H, W) array or a list of (H, W) / (1, H, W)."""
    if isinstance(arrays, np.ndarray):
        if arrays.ndim == 2:
            arrays = arrays[None]
        elif arrays.ndim == 4 and arrays.shape[1] == 1:
            arrays = arrays[:, 0]
        if arrays.ndim != 3:
            raise ValueError(f"plot.{function}: expected images of shape (N, H, W) or (N, 1, H, W), "
                             f"got shape {arrays.shape}")
        return list(arrays)
    result = []
    for i, array in enumerate(arrays):
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise ValueError(f"plot.{function}: image {i} has shape {array.shape}, expected (H, W) or (1, H, W)")
        result.append(array)
    if not result:
        raise ValueError(f"plot.{function}: no image to show")
    return result


def _class_ids(values, name, function):
    """A 1-D int array of class indices (0, 1, ...), or a ValueError saying what is wrong."""
    values = np.asarray(values)
    if values.ndim != 1:
        hint = ": pass class indices, e.g. proba.argmax(axis=1)" if values.ndim == 2 else ""
        raise ValueError(f"plot.{function}: {name} must have shape (N,), got shape {values.shape}{hint}")
    if values.size and not (np.all(values == np.round(values)) and values.min() >= 0):
        raise ValueError(f"plot.{function}: {name} must hold class indices 0, 1, ..., got values "
                         f"from {values.min()} to {values.max()}")
    return values.astype(np.int64)


def _labelled(y_true, y_pred, count, function):
    """``y_true`` and ``y_pred`` as class indices of equal length (``count`` when given)."""
    y_true, y_pred = _class_ids(y_true, "y_true", function), _class_ids(y_pred, "y_pred", function)
    expected = len(y_true) if count is None else count
    if len(y_true) != expected or len(y_pred) != expected:
        raise ValueError(f"plot.{function}: y_true has {len(y_true)} entries and y_pred {len(y_pred)}"
                         + ("" if count is None else f", expected one per image ({count})"))
    if expected == 0:
        raise ValueError(f"plot.{function}: y_true and y_pred are empty")
    return y_true, y_pred


def _probabilities(proba, count, function):
    """``proba`` as (count, classes) probabilities; log-probabilities and logits are refused with a hint."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != count:
        raise ValueError(f"plot.{function}: proba must have shape ({count}, classes), got shape {proba.shape}")
    if proba.min() < 0 or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"plot.{function}: proba must hold probabilities (rows >= 0 summing to 1), got values "
                         f"from {proba.min():.3g} to {proba.max():.3g}: for log-probabilities (a model ending in "
                         "LogSoftmax) pass np.exp(outputs), for logits pass nnscratch.Softmax()(outputs)")
    return proba


def _weights(layer_or_weights):
    """The array of a Conv2d (its weight), a Parameter or an array."""
    weight = getattr(layer_or_weights, "weight", layer_or_weights)
    if isinstance(weight, Parameter):
        return weight.data
    if isinstance(weight, (np.ndarray, list, tuple)):
        return np.asarray(weight)
    raise TypeError(f"plot.filters: expected a Conv2d, a Parameter or an array, got {type(layer_or_weights).__name__}")


# ---------------------------------------------------------------------------------------------
# Grids of images
# ---------------------------------------------------------------------------------------------

def _image_grid(arrays, titles, ncols, cmap, symmetric, suptitle):
    count = len(arrays)
    ncols = max(1, min(count, ncols or 8))
    nrows = math.ceil(count / ncols)
    fig = _figure(CELL * ncols + (0.8 if symmetric else 0), CELL * nrows + (0.4 if suptitle else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.remove()
    axes = axes[:count]
    colours = _symmetric_scale(arrays) if symmetric else {"cmap": cmap or "gray"}
    for i, (ax, array) in enumerate(zip(axes, arrays)):
        shown = ax.imshow(array, interpolation="nearest", **colours)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if symmetric:
        fig.colorbar(shown, ax=list(axes), shrink=0.8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def images(arrays, titles=None, *, ncols=None, cmap=None, symmetric=False, suptitle=None):
    """A grid of 2-D images, ``ncols`` per row (default up to 8), each titled by ``titles``.

    ``arrays``: (N, H, W), (N, 1, H, W), or a list of 2-D arrays (sizes may differ: e.g. an image
    and its pooled versions). Each image gets its own grey scale (``cmap`` default "gray"): the
    darkest pixel is its smallest value, the lightest its largest. With ``symmetric=True`` every
    image shares one diverging scale centred on 0 (blue negative, white zero, red positive, the
    colour bar gives the values): use it for filters, gradients and signed feature maps.
    """
    arrays = _image_list(arrays, "images")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"plot.images: {len(titles)} titles for {len(arrays)} images")
    return _image_grid(arrays, titles, ncols, cmap, symmetric, suptitle)


def filters(layer_or_weights, *, in_channel=0, ncols=None, title=None):
    """The kernels of a convolution, one small image per output channel, titled by its index.

    ``layer_or_weights``: a Conv2d, its ``weight`` Parameter, or an array (O, I, kh, kw) (the
    kernels applied to input channel ``in_channel`` are shown) or (O, kh, kw). One diverging
    scale for all: red weights respond to bright pixels, blue ones to dark pixels, white ignore
    them; a kernel red on one side and blue on the other detects an edge across that direction.
    """
    weights = _weights(layer_or_weights)
    if weights.ndim == 4:
        if not 0 <= in_channel < weights.shape[1]:
            raise ValueError(f"plot.filters: in_channel={in_channel}, but the weights of shape {weights.shape} "
                             f"have {weights.shape[1]} input channel(s)")
        weights, what = weights[:, in_channel], f", input channel {in_channel}"
    elif weights.ndim == 3:
        what = ""
    else:
        raise ValueError(f"plot.filters: expected weights of shape (O, I, kh, kw) or (O, kh, kw), got {weights.shape}")
    out, height, width = weights.shape
    title = title or f"{out} filters {height}×{width}{what}"
    return _image_grid(list(weights), [str(i) for i in range(out)], ncols, None, True, title)


# ---------------------------------------------------------------------------------------------
# Inside a network
# ---------------------------------------------------------------------------------------------

def feature_maps(model, image, *, max_maps=8, layers=None):
    """What every layer of ``model`` outputs for ONE image, one row per layer, the input first.

    ``image``: (C, H, W) or (1, C, H, W), prepared as for training (floats, e.g.
    ``nnscratch.data.prepare_images(raw)[0]``). ``model``: a Sequential (seed_net,
    keras_transfer_net, your own); ``layers``: names of the layers to show (default all).
    The model runs in eval mode (dropout off) and gets its own modes back afterwards.

    Image-shaped outputs (C, H, W) show their first ``max_maps`` channels. A row whose values
    are all >= 0 (after ReLU, pooling) is grey from 0 (black) to its largest value (white); a
    signed row (a convolution's output) is blue negative / red positive around 0. Vectors
    (after Flatten or a Dense layer) are a bar per value, or a colour strip when long.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"plot.feature_maps: expected a Sequential (its layers run one after another), "
                        f"got {type(model).__name__}")
    x = np.asarray(image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(f"plot.feature_maps: expected ONE image of shape (C, H, W) or (1, C, H, W), "
                         f"got shape {np.shape(image)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"plot.feature_maps: the image is {x.dtype}; pass it as the model sees it in training, "
                        "e.g. nnscratch.data.prepare_images(raw_images)[i]")
    names = model.names()
    wanted = names if layers is None else list(layers)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(f"plot.feature_maps: no layer named {unknown}; the model's layers are {names}")
    rows, output = [("input", x)], x[None]
    with model.eval_mode():
        for name, layer in model.named_children():
            output = layer(output)
            if name in wanted:
                rows.append((name, output[0]))

    fig = _figure(1.0 * max_maps + 1.2, 1.0 * len(rows))
    grid = fig.add_gridspec(len(rows), max_maps)
    for row, (name, values) in enumerate(rows):
        label = f"{name}\n{'×'.join(map(str, values.shape))}"
        if values.ndim == 3:
            maps = values[:max_maps]
            colours = _symmetric_scale(maps) if maps.min() < 0 else {"cmap": "gray", "vmin": 0,
                                                                     "vmax": float(maps.max()) or 1.0}
            panels = [fig.add_subplot(grid[row, c]) for c in range(len(maps))]
            for ax, one_map in zip(panels, maps):
                ax.imshow(one_map, interpolation="nearest", **colours)
        else:
            panels = [fig.add_subplot(grid[row, :])]
            _vector_strip(panels[0], values.ravel())
        for ax in panels:
            ax.set_xticks([])
            ax.set_yticks([])
        panels[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return fig


def _vector_strip(ax, vector):
    if vector.size <= BAR_LIMIT:
        ax.bar(np.arange(vector.size), vector, width=0.9, color=np.where(vector < 0, "tab:blue", "tab:red"))
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlim(-0.5, vector.size - 0.5)
    else:
        ax.imshow(vector[None], aspect="auto", interpolation="nearest", **_symmetric_scale([vector]))


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------

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
from .transfer import accuracy_heatmap, layer_transfer  # noqa: E402,F401  (the transfer studies' figures)

"""Figures of the transfer studies (notebooks 05 and 06, ``examples/layer_transfer.py``,
``examples/transfer_limits.py``): which layers transfer (Yosinski et al., 2014, Figure 2) and
when transfer fails (a strategy × shift heatmap).

Re-exported by :mod:`nnscratch.plot` (``plot.layer_transfer``, ``plot.accuracy_heatmap``). Like
every figure there, each function returns a :class:`matplotlib.figure.Figure`, shows nothing and
changes no matplotlib setting.
"""
import itertools
import textwrap

import numpy as np

from .figure import _one_panel


def accuracy_heatmap(cells, *, ax=None, title=None, xlabel=None, ylabel=None):
    """Accuracies on a grid, e.g. training strategy (rows) × input shift (columns).

    ``cells``: a dict row name -> dict column name -> the accuracies in [0, 1] measured over
    seeds (a list, or one number). Every row has the same columns; their order is the first
    row's. A cell's colour is its mean (0 % dark to 100 % bright, one scale for the whole grid,
    so equal colours are equal accuracies); its text is the mean in %, ``± sd`` over the seeds
    when there are several. Column names longer than 14 characters wrap. Returns the Figure.
    """
    if not cells:
        raise ValueError("plot.accuracy_heatmap: cells is empty; expected a dict row -> {column: accuracies}")
    rows = list(cells)
    columns = list(cells[rows[0]])
    for row in rows:
        if list(cells[row]) != columns:
            raise ValueError(f"plot.accuracy_heatmap: row {row!r} has columns {list(cells[row])}, "
                             f"expected those of row {rows[0]!r}: {columns}")
    means = np.zeros((len(rows), len(columns)))
    texts = []
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            values = np.atleast_1d(np.asarray(cells[row][column], dtype=float))
            if values.size == 0 or not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
                raise ValueError(f"plot.accuracy_heatmap: cell ({row!r}, {column!r}) needs accuracies in [0, 1] "
                                 f"(fractions, not %), got {values.tolist()}")
            means[i, j] = 100 * values.mean()
            spread = f"\n± {100 * values.std(ddof=1):.1f}" if values.size > 1 else ""
            texts.append((i, j, f"{means[i, j]:.1f}{spread}"))
    fig, ax = _one_panel(ax, (1.3 * len(columns) + 2.2, 0.65 * len(rows) + 1.6))
    image = ax.imshow(means, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, j, text in texts:  # dark text on the bright (high) cells, white on the dark ones
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if means[i, j] > 60 else "white")
    ax.set_xticks(range(len(columns)), [textwrap.fill(str(column), 14) for column in columns])  # long names wrap
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=xlabel or "", ylabel=ylabel or "", title=title or "Accuracy (%)")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.8)
    return fig


# The paper's colours: runs copied from B in blues, from A in reds, fine-tuned ones lighter;
# the random-frozen control in grey. Other names get the next style of the cycle.
TREATMENT_STYLES = {
    "BnB": {"color": "#1f3b99", "marker": "o"},
    "BnB+": {"color": "#6fa8dc", "marker": "o"},
    "AnB": {"color": "#a61c1c", "marker": "D"},
    "AnB+": {"color": "#ea9999", "marker": "D"},
    "RnB": {"color": "#7f7f7f", "marker": "s"},
}
OTHER_STYLES = ({"color": "#38761d", "marker": "^"}, {"color": "#bf9000", "marker": "v"})
SPREAD = 0.3  # the dots of the treatments at one n are spread over this width, so none hides another


def _check_fractions(values, what):
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if values.ndim != 1 or values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"plot.layer_transfer: {what} must be accuracies in [0, 1] (fractions, not %), "
                         f"at least one; got {values}")
    return values


def layer_transfer(baseline, curves, *, ax=None, title=None, ylim=None,
                   ylabel="Top-1 accuracy on B (%)"):
    """
    The layout of Yosinski et al.'s Figure 2: accuracy on task B against the number n of layers
    copied from a base network.

    ``baseline``: the accuracies (fractions, one per seed) of the base network trained on B from
    scratch, drawn as white dots at n = 0 and a dashed line across at their mean. ``curves``: a
    dict treatment name (e.g. "BnB", "AnB+") -> ``{n: [accuracy per seed]}``. Every run is one dot
    (the treatments at one n side by side, in the order of `curves`); the means are joined by a
    line. ``ylim`` ``(low, high)`` in % zooms in (dots outside it are not drawn).
    """
    baseline = _check_fractions(baseline, "baseline")
    if not curves:
        raise ValueError("plot.layer_transfer: curves is empty; expected a dict name -> {n: accuracies}")
    fig, ax = _one_panel(ax, (7.0, 4.6))
    offsets = np.linspace(-SPREAD / 2, SPREAD / 2, len(curves)) if len(curves) > 1 else [0.0]
    others = itertools.cycle(OTHER_STYLES)
    depths = set()
    ax.axhline(100 * baseline.mean(), color="black", linestyle="--", linewidth=1, label="baseline B (n = 0)")
    ax.plot(np.zeros(baseline.size), 100 * baseline, "o", markerfacecolor="white", markeredgecolor="black")
    for (name, by_depth), offset in zip(curves.items(), offsets):
        if not hasattr(by_depth, "items") or not by_depth:
            raise ValueError(f"plot.layer_transfer: curve {name!r} must be a dict n -> accuracies, got {by_depth!r:.80}")
        style = TREATMENT_STYLES.get(name) or next(others)
        ns = sorted(by_depth)
        depths.update(ns)
        means = []
        for n in ns:
            runs = _check_fractions(by_depth[n], f"curve {name!r} at n={n}")
            ax.plot(np.full(runs.size, n + offset), 100 * runs, style["marker"], color=style["color"],
                    alpha=0.75, markersize=5)
            means.append(100 * runs.mean())
        ax.plot(np.asarray(ns) + offset, means, "-", color=style["color"], linewidth=1.5, label=name,
                marker=style["marker"], markersize=3)
    ax.set_xticks(sorted(depths | {0}))
    ax.set(xlabel="layers n copied from the base network", ylabel=ylabel,
           title=title or "Which layers transfer? (one dot per run, lines join the means)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return fig

"""Figures of the transfer studies (notebooks 05 and 06, ``examples/transfer_limits.py``).

Like :mod:`nnscratch.plot`, every function returns a :class:`matplotlib.figure.Figure`, shows
nothing and changes no matplotlib setting.
"""
import numpy as np

from .plot import _one_panel


def accuracy_heatmap(cells, *, ax=None, title=None, xlabel=None, ylabel=None):
    """Accuracies on a grid, e.g. training strategy (rows) × input shift (columns).

    ``cells``: a dict row name -> dict column name -> the accuracies in [0, 1] measured over
    seeds (a list, or one number). Every row has the same columns; their order is the first
    row's. A cell's colour is its mean (0 % dark to 100 % bright, one scale for the whole grid,
    so equal colours are equal accuracies); its text is the mean in %, ``± sd`` over the seeds
    when there are several. Returns the Figure.
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
    fig, ax = _one_panel(ax, (1.25 * len(columns) + 2.2, 0.65 * len(rows) + 1.4))
    image = ax.imshow(means, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i, j, text in texts:  # dark text on the bright (high) cells, white on the dark ones
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if means[i, j] > 60 else "white")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel=xlabel or "", ylabel=ylabel or "", title=title or "Accuracy (%)")
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.8)
    return fig

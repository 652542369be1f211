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
from .curves import accuracy_vs_labels, confusion_matrix, history, misclassified
from .figure import BAR_LIMIT, CELL, CURVE_STYLES
from .images import feature_maps, filters, images
from .transfer import accuracy_heatmap, layer_transfer  # the transfer studies' figures

__all__ = [
    "BAR_LIMIT", "CELL", "CURVE_STYLES", "accuracy_heatmap", "accuracy_vs_labels", "confusion_matrix",
    "feature_maps", "filters", "history", "images", "layer_transfer", "misclassified",
]

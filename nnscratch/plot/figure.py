"""What every figure of :mod:`nnscratch.plot` is drawn on, and the checks of what a learner passes to it."""
import io

import numpy as np
from matplotlib.figure import Figure

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


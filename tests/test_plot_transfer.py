"""nnscratch.plot_transfer: the figures of the transfer studies."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from nnscratch.plot_transfer import accuracy_heatmap


def test_accuracy_heatmap_cells_hold_mean_and_sd():
    cells = {"frozen": {"none": [0.99, 0.97], "inverted": 0.5},
             "scratch": {"none": [0.8, 0.8], "inverted": [0.1, 0.3]}}
    fig = accuracy_heatmap(cells, xlabel="shift", title="t")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    image = ax.images[0]
    np.testing.assert_allclose(image.get_array(), [[98.0, 50.0], [80.0, 20.0]])
    assert image.get_clim() == (0, 100)   # one fixed scale: equal colours are equal accuracies
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["98.0\n± 1.4", "50.0", "80.0\n± 0.0", "20.0\n± 14.1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "inverted"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["frozen", "scratch"]
    assert ax.get_xlabel() == "shift" and ax.get_title() == "t"


def test_accuracy_heatmap_draws_into_a_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert accuracy_heatmap({"a": {"x": 0.5}}, ax=ax) is fig


@pytest.mark.parametrize("cells, message", [
    ({}, "cells is empty"),
    ({"a": {"x": 0.5}, "b": {"y": 0.5}}, "row 'b' has columns"),
    ({"a": {"x": 97.0}}, "fractions, not %"),
    ({"a": {"x": []}}, "fractions, not %"),
])
def test_accuracy_heatmap_refuses_bad_cells(cells, message):
    with pytest.raises(ValueError, match=message):
        accuracy_heatmap(cells)

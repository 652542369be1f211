"""nnscratch.plot.transfer: the figures of the transfer studies."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from nnscratch.plot.transfer import accuracy_heatmap


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


# ---------------------------------------------------------------------------------------------
# layer_transfer: Yosinski et al.'s Figure 2
# ---------------------------------------------------------------------------------------------

def _points(line):
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def test_layer_transfer_draws_one_dot_per_run_and_joins_the_means():
    from nnscratch.plot.transfer import layer_transfer
    curves = {"BnB": {1: [0.90, 0.92], 2: [0.80, 0.84]}, "AnB+": {1: [0.95, 0.97], 2: [0.96, 0.98]}}
    fig = layer_transfer([0.91, 0.93, 0.95], curves, title="t")
    ax = fig.axes[0]
    lines = ax.get_lines()
    baseline_line, baseline_dots = lines[0], lines[1]
    np.testing.assert_allclose(_points(baseline_line)[1], [93.0, 93.0])      # dashed line at the mean
    np.testing.assert_allclose(_points(baseline_dots)[1], [91.0, 93.0, 95.0])  # one dot per seed at n = 0
    np.testing.assert_allclose(_points(baseline_dots)[0], 0.0)
    # per curve: one dot series per n, then the line of means
    bnb_1, bnb_2, bnb_means, anb_1, anb_2, anb_means = lines[2:]
    np.testing.assert_allclose(_points(bnb_1)[1], [90.0, 92.0])
    np.testing.assert_allclose(_points(bnb_2)[1], [80.0, 84.0])
    np.testing.assert_allclose(_points(bnb_means)[1], [91.0, 82.0])
    np.testing.assert_allclose(_points(anb_means)[1], [96.0, 97.0])
    # the treatments at one n sit side by side, not on top of each other
    assert _points(bnb_1)[0][0] < 1.0 < _points(anb_1)[0][0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline B (n = 0)", "BnB", "AnB+"]
    assert [float(x) for x in ax.get_xticks()] == [0.0, 1.0, 2.0]
    assert ax.get_title() == "t"
    assert bnb_means.get_color() != anb_means.get_color()


def test_layer_transfer_into_a_given_axes_and_zoom():
    from nnscratch.plot.transfer import layer_transfer
    fig = Figure()
    ax = fig.add_subplot()
    assert layer_transfer([0.5], {"RnB": {3: [0.2]}}, ax=ax, ylim=(10, 60)) is fig
    assert ax.get_ylim() == (10.0, 60.0)


def test_layer_transfer_refuses_percentages_and_empty_curves():
    from nnscratch.plot.transfer import layer_transfer
    with pytest.raises(ValueError, match=r"baseline must be accuracies in \[0, 1\]"):
        layer_transfer([91.0], {"BnB": {1: [0.9]}})
    with pytest.raises(ValueError, match=r"curve 'BnB' at n=1 must be accuracies"):
        layer_transfer([0.9], {"BnB": {1: [90.0]}})
    with pytest.raises(ValueError, match="curves is empty"):
        layer_transfer([0.9], {})
    with pytest.raises(ValueError, match=r"curve 'AnB' must be a dict n -> accuracies"):
        layer_transfer([0.9], {"AnB": [0.9, 0.8]})


def test_plot_reexports_the_transfer_figures():
    from nnscratch import plot
    from nnscratch.plot import transfer as plot_transfer
    assert plot.layer_transfer is plot_transfer.layer_transfer
    assert plot.accuracy_heatmap is plot_transfer.accuracy_heatmap


@pytest.mark.parametrize("first", ["nnscratch.plot.transfer", "nnscratch.plot"])
def test_either_module_imports_first(first):
    """plot imports plot_transfer at its end; plot_transfer imports plot only inside its functions."""
    import subprocess
    import sys
    code = f"import {first}; from nnscratch import plot; print(plot.layer_transfer.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "nnscratch.plot.transfer"

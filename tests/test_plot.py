"""nnscratch.plot: each figure is rendered with Agg and what it drew is compared with its input."""
import io
import subprocess
import sys
from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import models, plot
from nnscratch.training import History

from strategies import PNG_MAGIC


def render(fig):
    """Draw the figure with Agg (as savefig does); return the PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    assert buffer.getvalue()[:8] == PNG_MAGIC
    return buffer.getvalue()


def image_of(ax):
    (shown,) = ax.images
    return np.asarray(shown.get_array())


def digits(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Import and display behaviour
# ---------------------------------------------------------------------------------------------

def test_imports_change_nothing_in_matplotlib():
    # Reading rcParams["backend"] of the live rcParams would itself resolve the backend (and
    # import pyplot), so pyplot is checked first and the comparison skips that key.
    code = (
        "import sys, nnscratch\n"
        "assert 'matplotlib' not in sys.modules, 'import nnscratch imported matplotlib'\n"
        "import matplotlib\n"
        "before = matplotlib.rcParams.copy()\n"
        "from nnscratch import plot\n"
        "plot.history(nnscratch.History(train_loss=[1.0], train_accuracy=[0.5]))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "changed = [k for k, v in before.items() if k != 'backend' and matplotlib.rcParams[k] != v]\n"
        "assert not changed, f'rcParams changed: {changed}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_figures_stay_out_of_pyplot_and_show_themselves_as_png():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fig = plot.images(digits(2))
    assert plt.get_fignums() == open_before  # plt.show() / the inline backend never show it again
    assert fig._repr_png_()[:8] == PNG_MAGIC  # what Jupyter displays when pyplot's inline backend is off


# ---------------------------------------------------------------------------------------------
# images and filters
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 28, 28), (7, 1, 28, 28)])
def test_images_draw_each_input(shape):
    arrays = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    titles = [f"#{i}" for i in range(7)]
    fig = plot.images(arrays, titles, ncols=3, suptitle="seven")
    render(fig)
    assert len(fig.axes) == 7  # the two unused cells of the 3x3 grid are removed
    for i, ax in enumerate(fig.axes):
        np.testing.assert_array_equal(image_of(ax), arrays.reshape(7, 28, 28)[i])
        assert ax.get_title() == titles[i]
        assert ax.get_subplotspec().colspan.start == i % 3
    assert fig.get_suptitle() == "seven"


def test_images_accepts_uint8_and_a_list_of_sizes():
    arrays = [digits(1)[0], np.ones((14, 14)), np.zeros((1, 7, 7))]
    fig = plot.images(arrays)
    render(fig)
    assert [image_of(ax).shape for ax in fig.axes] == [(28, 28), (14, 14), (7, 7)]
    np.testing.assert_array_equal(image_of(fig.axes[0]), arrays[0])


def test_images_symmetric_shares_one_scale_centred_on_zero():
    arrays = np.array([[[1.0, -3.0]], [[0.5, 2.0]]])
    fig = plot.images(arrays, symmetric=True)
    render(fig)
    panels = fig.axes[:2]
    for ax in panels:
        assert ax.images[0].get_clim() == (-3.0, 3.0)
        assert ax.images[0].get_cmap().name == "RdBu_r"
    assert len(fig.axes) == 3  # the two images and their colour bar


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3, 28, 28)), r"\(N, H, W\) or \(N, 1, H, W\), got shape \(2, 3, 28, 28\)"),
    (np.zeros(5), r"got shape \(5,\)"),
    ([np.zeros((4, 4)), np.zeros((2, 4, 4))], r"image 1 has shape \(2, 4, 4\)"),
])
def test_images_wrong_shape(bad, message):
    with pytest.raises(ValueError, match=r"plot\.images: .*" + message):
        plot.images(bad)


def test_images_title_count():
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plot.images(np.zeros((3, 4, 4)), ["a", "b"])


def test_filters_of_a_conv2d_a_parameter_and_an_array_agree():
    nn.manual_seed(0)
    conv = nn.Conv2d(3, 6, 5)
    weights = conv.weight.data
    figures = [plot.filters(conv, in_channel=2), plot.filters(conv.weight, in_channel=2),
               plot.filters(weights, in_channel=2), plot.filters(weights[:, 2])]
    for fig in figures:
        panels = fig.axes[:-1]  # the last axes is the colour bar
        assert len(panels) == 6
        for o, ax in enumerate(panels):
            np.testing.assert_array_equal(image_of(ax), weights[o, 2])
            assert ax.get_title() == str(o)
    render(figures[0])
    assert figures[0].get_suptitle() == "6 filters 5×5, input channel 2"


def test_filters_errors():
    conv = nn.Conv2d(2, 4, 3)
    with pytest.raises(ValueError, match=r"in_channel=2, but the weights of shape \(4, 2, 3, 3\) have 2 input"):
        plot.filters(conv, in_channel=2)
    with pytest.raises(ValueError, match=r"plot\.filters: expected weights of shape .* got \(4, 9\)"):
        plot.filters(np.zeros((4, 9)))
    with pytest.raises(TypeError, match="plot.filters: expected a Conv2d, a Parameter or an array, got ReLU"):
        plot.filters(nn.ReLU())


# ---------------------------------------------------------------------------------------------
# feature_maps
# ---------------------------------------------------------------------------------------------

def rows_of(fig):
    """{row label's first line: [axes of that row]} in the order drawn."""
    rows = OrderedDict()
    for ax in fig.axes:
        row = ax.get_subplotspec().rowspan.start
        rows.setdefault(row, []).append(ax)
    return OrderedDict((axes[0].get_ylabel().split("\n")[0], axes) for axes in rows.values())


def eval_outputs(model, image):
    outputs, x = OrderedDict(input=image), image[None]
    with model.eval_mode():
        for name, layer in model.named_children():
            x = layer(x)
            outputs[name] = x[0]
    return outputs


def test_feature_maps_of_the_seed_net_in_eval_mode_with_modes_restored():
    nn.manual_seed(3)
    net = models.seed_net()
    net.train()
    net.dropout2.eval()  # a mode left on purpose must come back as it was
    modes = {name: module.training for name, module in net.named_modules()}
    image = np.random.default_rng(0).standard_normal((1, 28, 28)).astype(np.float32)
    expected = eval_outputs(net, image)

    fig = plot.feature_maps(net, image[None], max_maps=4)
    render(fig)
    assert {name: module.training for name, module in net.named_modules()} == modes
    rows = rows_of(fig)
    assert list(rows) == ["input"] + net.names()
    for name, axes in rows.items():
        values = expected[name]
        if values.ndim == 3:  # maps: the first max_maps channels
            assert len(axes) == min(4, len(values))
            for c, ax in enumerate(axes):
                np.testing.assert_array_equal(image_of(ax), values[c])
        elif values.size <= plot.BAR_LIMIT:  # a bar per value
            heights = [bar.get_height() for bar in axes[0].patches]
            np.testing.assert_allclose(heights, values, rtol=1e-6)
        else:  # a strip
            np.testing.assert_array_equal(image_of(axes[0]), values[None])
    # eval mode: dropout is the identity
    np.testing.assert_array_equal(image_of(rows["dropout1"][0]), image_of(rows["pool"][0]))


def test_feature_maps_layers_of_keras_net_and_user_sequential():
    nn.manual_seed(0)
    image = np.random.default_rng(1).standard_normal((1, 28, 28)).astype(np.float32)
    fig = plot.feature_maps(models.keras_transfer_net(filters=4), image, layers=["conv2", "fc2"])
    assert list(rows_of(fig)) == ["input", "conv2", "fc2"]
    assert len(rows_of(fig)["conv2"]) == 4

    user = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(1), nn.Dense(2 * 26 * 26, 3))
    rows = rows_of(plot.feature_maps(user, image, max_maps=8))
    assert list(rows) == ["input", "0", "1", "2", "3"]
    assert [len(axes) for axes in rows.values()] == [1, 2, 2, 1, 1]
    expected = eval_outputs(user, image)
    np.testing.assert_allclose([bar.get_height() for bar in rows["3"][0].patches], expected["3"], rtol=1e-6)


def test_feature_maps_errors():
    net = models.keras_transfer_net(filters=2)
    image = np.zeros((1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"ONE image of shape \(C, H, W\) or \(1, C, H, W\), got shape \(2, 1, 28, 28\)"):
        plot.feature_maps(net, np.zeros((2, 1, 28, 28), dtype=np.float32))
    with pytest.raises(TypeError, match="the image is uint8; .*prepare_images"):
        plot.feature_maps(net, digits(1))
    with pytest.raises(ValueError, match=r"no layer named \['conv3'\]; the model's layers are \['conv1'"):
        plot.feature_maps(net, image, layers=["conv3"])
    with pytest.raises(TypeError, match="expected a Sequential .* got Conv2d"):
        plot.feature_maps(nn.Conv2d(1, 2, 3), image)


# ---------------------------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------------------------

def made_history(accuracy=(0.5, 0.75)):
    history = History(train_loss=[1.5, 0.9], train_accuracy=list(accuracy), val_loss=[1.2, 1.0],
                      val_accuracy=[0.6, 0.7], epoch_time=[1.0, 1.0])
    history.batch_loss = [2.0, 1.6, 1.4, 1.0, 1.1, 0.8]
    history.epoch_batches = [4, 2]
    return history


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_history_draws_batches_epochs_and_accuracy():
    fig = plot.history(made_history(), title="run")
    render(fig)
    loss_ax, accuracy_ax = fig.axes
    lines = lines_by_label(loss_ax)
    np.testing.assert_allclose(lines["train, per batch"].get_xdata(), [0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(lines["train, per batch"].get_ydata(), [2.0, 1.6, 1.4, 1.0, 1.1, 0.8])
    np.testing.assert_array_equal(lines["train, epoch mean"].get_xdata(), [1, 2])
    np.testing.assert_array_equal(lines["train, epoch mean"].get_ydata(), [1.5, 0.9])
    np.testing.assert_array_equal(lines["validation"].get_ydata(), [1.2, 1.0])
    accuracy = lines_by_label(accuracy_ax)
    np.testing.assert_allclose(accuracy["train"].get_ydata(), [50, 75])
    np.testing.assert_allclose(accuracy["validation"].get_ydata(), [60, 70])
    assert loss_ax.get_xlabel() == "epoch" and fig.get_suptitle() == "run"
    assert loss_ax.get_yscale() == "linear"
    assert plot.history(made_history(), logy=True).axes[0].get_yscale() == "log"


def test_history_without_accuracy_or_batches_and_on_given_axes():
    history = made_history(accuracy=(float("nan"), float("nan")))
    history.val_accuracy = [float("nan")] * 2
    assert len(plot.history(history).axes) == 1  # no accuracy panel when none is known

    plain = History(train_loss=[1.0, 0.5, 0.4], train_accuracy=[0.1, 0.2, 0.3])  # no batch losses
    fig = plot.history(plain)
    assert set(lines_by_label(fig.axes[0])) == {"train, epoch mean"}

    host = plot.images(np.zeros((2, 3, 3)))
    returned = plot.history(made_history(), ax=host.axes[1])
    assert returned is host and "train, per batch" in lines_by_label(host.axes[1])


def test_history_errors():
    with pytest.raises(ValueError, match="plot.history: the history is empty"):
        plot.history(History())
    broken = made_history()
    broken.epoch_batches = [4, 1]
    with pytest.raises(ValueError, match=r"batch_loss has 6 entries but history.epoch_batches \[4, 1\] adds up to 5"):
        plot.history(broken)


# ---------------------------------------------------------------------------------------------
# confusion_matrix
# ---------------------------------------------------------------------------------------------

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 0, 2, 1])
COUNTS = np.array([[2, 1, 0], [0, 2, 0], [1, 1, 2]])  # rows: true, columns: predicted


def cell_texts(ax):
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_matrix_counts_rows_true_columns_predicted():
    fig = plot.confusion_matrix(Y_TRUE, Y_PRED, labels=["zero", "one", "two"])
    render(fig)
    (ax,) = fig.axes
    np.testing.assert_array_equal(image_of(ax), COUNTS)
    assert cell_texts(ax) == {(i, j): str(COUNTS[i, j]) for i in range(3) for j in range(3)}
    assert [t.get_text() for t in ax.get_yticklabels()] == ["zero", "one", "two"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    assert "accuracy 66.67% of 9" in ax.get_title()


def test_confusion_matrix_normalized_rows():
    (ax,) = plot.confusion_matrix(Y_TRUE, Y_PRED, normalize=True).axes
    np.testing.assert_allclose(image_of(ax).sum(axis=1), 1.0)
    assert cell_texts(ax)[(2, 0)] == "0.25"


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"y_pred must have shape \(N,\), got shape \(9, 3\): pass class indices"):
        plot.confusion_matrix(Y_TRUE, np.eye(3)[Y_PRED])
    with pytest.raises(ValueError, match="y_true has 9 entries and y_pred 8"):
        plot.confusion_matrix(Y_TRUE, Y_PRED[:-1])
    with pytest.raises(ValueError, match="y_true must hold class indices"):
        plot.confusion_matrix(Y_TRUE - 1, Y_PRED)
    with pytest.raises(ValueError, match="2 labels given, but the classes go up to 2"):
        plot.confusion_matrix(Y_TRUE, Y_PRED, labels=["a", "b"])


# ---------------------------------------------------------------------------------------------
# misclassified
# ---------------------------------------------------------------------------------------------

def test_misclassified_most_confident_first():
    images = digits(9)
    confidence = np.full(9, 0.8)
    confidence[[2, 6, 8]] = [0.5, 0.7, 0.6]  # the mistakes
    proba = np.repeat(((1 - confidence) / 2)[:, None], 3, axis=1)
    proba[np.arange(9), Y_PRED] = confidence
    fig = plot.misclassified(images[:, None], Y_TRUE, Y_PRED, proba, labels=["a", "b", "c"])
    render(fig)
    order = [6, 8, 2]  # by the probability given to the wrong answer: 0.7, 0.6, 0.5
    assert [ax.get_title() for ax in fig.axes] == ["c→a p=0.70", "c→b p=0.60", "a→b p=0.50"]
    for ax, i in zip(fig.axes, order):
        np.testing.assert_array_equal(image_of(ax), images[i])
    assert fig.get_suptitle().startswith("3 mistakes of 9")


def test_misclassified_without_proba_in_input_order_and_n():
    fig = plot.misclassified(digits(9), Y_TRUE, Y_PRED, n=2)
    assert [ax.get_title() for ax in fig.axes] == ["0→1", "2→0"]


def test_misclassified_no_mistake():
    fig = plot.misclassified(digits(9), Y_TRUE, Y_TRUE)
    assert "no mistakes among 9 images" in fig.axes[0].texts[0].get_text()


def test_misclassified_errors():
    log_proba = np.log(np.full((9, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"proba must hold probabilities .*np\.exp\(outputs\)"):
        plot.misclassified(digits(9), Y_TRUE, Y_PRED, log_proba)
    with pytest.raises(ValueError, match=r"proba must have shape \(9, classes\), got shape \(8, 3\)"):
        plot.misclassified(digits(9), Y_TRUE, Y_PRED, np.full((8, 3), 1 / 3))
    with pytest.raises(ValueError, match="expected one per image \\(5\\)"):
        plot.misclassified(digits(5), Y_TRUE, Y_PRED)
    with pytest.raises(ValueError, match=r"plot\.misclassified: .*got shape \(9, 3, 28, 28\)"):
        plot.misclassified(np.zeros((9, 3, 28, 28)), Y_TRUE, Y_PRED)


# ---------------------------------------------------------------------------------------------
# accuracy_vs_labels
# ---------------------------------------------------------------------------------------------

CURVES = {"scratch": [[0.80, 0.84, 0.86], [0.9, 0.92], [0.97]],
          "transfer": [[0.90, 0.94], [0.95, 0.97], [0.98]]}


def test_accuracy_vs_labels_means_and_error_bars():
    fig = plot.accuracy_vs_labels([10, 100, 5000], CURVES, xticklabels=["10", "100", "all"])
    render(fig)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "100", "all"]
    styles = set()
    for container, (name, runs) in zip(ax.containers, CURVES.items()):
        line, _, (bars,) = container
        assert container.get_label() == name
        means = [100 * np.mean(r) for r in runs]
        sds = [100 * np.std(r, ddof=1) if len(r) > 1 else 0.0 for r in runs]
        np.testing.assert_allclose(line.get_xdata(), [10, 100, 5000])
        np.testing.assert_allclose(line.get_ydata(), means)
        for (low, high), mean, sd in zip(bars.get_segments(), means, sds):
            np.testing.assert_allclose([low[1], high[1]], [mean - sd, mean + sd])
        styles.add((line.get_linestyle(), line.get_marker()))
    assert len(styles) == 2


def test_accuracy_vs_labels_errors():
    with pytest.raises(ValueError, match=r"curve 'scratch' has 3 entries, expected one per budget \(2\)"):
        plot.accuracy_vs_labels([10, 100], CURVES)
    with pytest.raises(ValueError, match=r"accuracies in \[0, 1\] \(fractions, not %\)"):
        plot.accuracy_vs_labels([10], {"scratch": [[84.0]]})
    with pytest.raises(ValueError, match="budgets must be positive numbers"):
        plot.accuracy_vs_labels([0, 10], {"scratch": [[0.5], [0.6]]})
    with pytest.raises(ValueError, match="curves is empty"):
        plot.accuracy_vs_labels([10], {})

"""A model holding a layer the user wrote (a ``Module`` subclass nnscratch knows nothing about) works
with every tool of :mod:`nnscratch.transfer` and with :func:`nnscratch.fit`: the summary (its FLOPs
"unknown"), weight files (saved and loaded by name; ``load_model`` refuses to rebuild it until its
class is registered, then rebuilds it), freezing, and training.
"""
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer
from nnscratch.data import DataLoader
from nnscratch.io import safetensors
from nnscratch.nn import LAYER_CLASSES, register_layer


class Gain(nn.Module):
    """``y = x · g`` with one learned gain per feature: a layer with a parameter that reports nothing about
    itself (no constructor_args, output_shape, parameter_shapes or flops)."""

    def __init__(self, features):
        super().__init__()
        self.gain = nn.Parameter(np.ones(features, dtype=np.float32))

    def forward(self, x):
        self._save_for_backward(_input=x)
        return x * self.gain.data

    def backward(self, grad_output, need_input_grad=True):
        x = self._saved("_input")
        if self.gain.requires_grad:
            self.gain.accumulate_grad((grad_output * x).sum(axis=0).astype(np.float32))
        return grad_output * self.gain.data if need_input_grad else None


def gain_net(seed=0):
    nn.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 2, 3)), ("relu", nn.ReLU()), ("flatten", nn.Flatten()),
        ("gain", Gain(2 * 6 * 6)), ("fc", nn.Dense(2 * 6 * 6, 3)),
    ]))


def loader(seed=0):
    rng = np.random.default_rng(seed)
    return DataLoader(rng.standard_normal((16, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 16), batch_size=8)


def test_summary_says_unknown_flops_for_the_user_layer():
    text = transfer.summary(gain_net(), input_shape=(1, 1, 8, 8))
    row = next(line for line in text.splitlines() if line.startswith("gain"))
    assert row.split()[:6] == ["gain", "Gain", "(1,", "72)", "72", "trainable"] and row.split()[-2:] == ["unknown", "-"]
    total = next(line for line in text.splitlines() if line.startswith("forward FLOPs"))
    conv, fc = 2 * 72 * 9 + 72, 2 * 72 * 3 + 3
    assert total == f"forward FLOPs for input (1, 1, 8, 8): {conv + 72 + fc:,} plus the unknown FLOPs of gain"


def test_weights_save_and_load_by_name_and_load_model_refuses_an_unregistered_class(tmp_path):
    path = tmp_path / "gain.safetensors"
    net = gain_net(seed=1)
    net.gain.gain.data[:] = np.linspace(0.5, 1.5, 72, dtype=np.float32)
    transfer.save_weights(net, path, input_shape=(1, 8, 8))
    arch = transfer.architecture(net, strict=False)
    assert arch[3] == {"name": "gain", "class": "Gain", "args": None}
    with pytest.raises(ValueError, match="layer 'gain' is a Gain, which cannot be described"):
        transfer.architecture(net)

    other = gain_net(seed=2)
    report = transfer.load_weights(other, path)
    assert report.ok and "gain.gain" in report.loaded
    x = np.random.default_rng(3).standard_normal((4, 1, 8, 8)).astype(np.float32)
    with nn.inference():
        np.testing.assert_array_equal(other(x), net(x))
    with pytest.raises(ValueError, match=r"load_model\(.*gain.safetensors\): layer 'gain' has class 'Gain', which "
                                         r"cannot be rebuilt; registered classes: .*Build the model in code"):
        transfer.load_model(path)


@pytest.fixture
def registry():
    """The layer registry, put back as it was after the test (the test's own classes leave it)."""
    saved = dict(LAYER_CLASSES)
    yield LAYER_CLASSES
    LAYER_CLASSES.clear()
    LAYER_CLASSES.update(saved)


def test_a_registered_user_layer_round_trips_through_load_model(tmp_path, registry):
    class Scale(nn.Module):
        def __init__(self, factor=2.0):
            super().__init__()
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise TypeError(f"Scale: factor must be a number, got {factor!r}")
            self.factor = factor

        def constructor_args(self):
            return {"factor": self.factor}

        def forward(self, x):
            return x * self.factor

    register_layer(Scale)
    path = tmp_path / "scale.safetensors"
    net = nn.Sequential(OrderedDict(fc=nn.Dense(4, 2), scale=Scale(0.5)))
    transfer.save_weights(net, path)
    rebuilt = transfer.load_model(path)
    assert isinstance(rebuilt.scale, Scale) and rebuilt.scale.factor == 0.5
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(rebuilt(x), net(x))

    class SavedGain(Gain):  # parameters, but no parameter_shapes: load_model checks them once it is built
        def constructor_args(self):
            return {"features": self.gain.shape[0]}

    register_layer(SavedGain)
    with_gain = nn.Sequential(OrderedDict(gain=SavedGain(4), fc=nn.Dense(4, 2)))
    with_gain.gain.gain.data[:] = [1, 2, 3, 4]
    transfer.save_weights(with_gain, path)
    np.testing.assert_array_equal(transfer.load_model(path).gain.gain.data, [1, 2, 3, 4])
    arrays, header = safetensors.load_file(path)
    header["architecture"][0]["args"]["features"] = 5
    safetensors.save_file(path, arrays, header)
    with pytest.raises(ValueError, match=r"(?s)load_model\(.*\): the file does not fit the model.*gain.gain: model \(5,\) "
                                         r"vs file \(4,\)$"):
        transfer.load_model(path)

    arch = transfer.architecture(net)
    arch[1]["args"]["factor"] = "0.5"  # what a hostile file could say: the class's own check refuses it
    with pytest.raises(ValueError, match=r"build_model: layer 'scale' \(Scale\): Scale: factor must be a number"):
        transfer.build_model(arch)


def test_freezing_and_fit_with_the_user_layer():
    net = gain_net()
    transfer.freeze(net, "gain")
    assert transfer.frozen_parameters(net) == ["gain.gain"]
    snapshot = transfer.frozen_snapshot(net)
    before_fc = net.fc.weight.data.copy()
    optimizer = nn.SGD(net.parameters(), lr=0.1, momentum=0.9)
    history = nn.fit(net, nn.CrossEntropyLoss(), optimizer, loader(), epochs=2, progress=False)
    assert len(history.train_loss) == 2 and all(np.isfinite(history.train_loss))
    transfer.assert_frozen_unchanged(net, snapshot)
    assert not np.array_equal(net.fc.weight.data, before_fc)

    transfer.unfreeze(net, "gain")
    nn.fit(net, nn.CrossEntropyLoss(), nn.SGD(net.parameters(), lr=0.1), loader(1), epochs=1, progress=False)
    with pytest.raises(AssertionError, match="gain.gain"):
        transfer.assert_frozen_unchanged(net, snapshot)

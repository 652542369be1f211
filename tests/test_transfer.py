"""Tests of nnscratch.transfer: weight files (round trip, strict/non-strict loading, hostile files),
freezing (nothing changes a frozen parameter, backward stops early), surgery (head, cut, extend,
input channels), feature extraction, fine-tuning with discriminative learning rates, summary and
PyTorch interoperability (parity with the seed's Net when torch is installed).

Small models on random data only: ``keras_transfer_net(filters=4, hidden=16)`` and tiny
``Sequential`` stacks, so the whole file runs in seconds.
"""
import json
import pathlib
import pickle
import struct
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import serialization, transfer
from nnscratch.data import DataLoader
from nnscratch.models import keras_transfer_net, seed_net

import torch_reference  # tests/torch_reference.py: the seed's PyTorch Net
from strategies import random_images

PARAM_NAMES = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
               "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def small_net(num_classes=5, hidden=16, seed=0):
    nn.manual_seed(seed)
    return keras_transfer_net(num_classes=num_classes, filters=4, hidden=hidden)


def eval_output(model, x):
    model.eval()
    out = model(x)
    model.train()
    return out


def random_loader(n=32, num_classes=5, batch_size=8, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, num_classes, n)
    return DataLoader(x, y, batch_size=batch_size, shuffle=True, seed=seed)


def params_copy(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


# ---------------------------------------------------------------------------
# weight files: round trip
# ---------------------------------------------------------------------------


def test_save_load_round_trip_identical_outputs(tmp_path):
    net = small_net(seed=0)
    x = random_images(6, seed=1)
    expected = eval_output(net, x)
    path = tmp_path / "w.safetensors"
    transfer.save_weights(net, path, metadata={"task": "digits 0-4"}, input_shape=(1, 28, 28))

    other = small_net(seed=123)
    assert not np.array_equal(eval_output(other, x), expected)
    report = transfer.load_weights(other, path)
    assert report.ok and report.loaded == PARAM_NAMES
    assert report.missing == report.unexpected == report.mismatched == report.skipped == []
    assert report.header["metadata"] == {"task": "digits 0-4"}
    np.testing.assert_array_equal(eval_output(other, x), expected)

    rebuilt = transfer.load_model(path)
    assert rebuilt.names() == net.names()
    assert transfer.architecture(rebuilt) == transfer.architecture(net)
    np.testing.assert_array_equal(eval_output(rebuilt, x), expected)
    assert all(p.requires_grad for p in rebuilt.parameters()) and rebuilt.training


def test_header_records_format_version_architecture_and_input_shape(tmp_path):
    net = small_net()
    path = tmp_path / "w.safetensors"
    transfer.save_weights(net, path, metadata={"classes": [0, 1, 2, 3, 4]}, input_shape=(1, 28, 28))
    arrays, header = serialization.load_file(path)
    assert sorted(arrays) == sorted(PARAM_NAMES)  # (safetensors orders tensors its own way)
    assert header["format"] == "nnscratch-weights" and header["format_version"] == 1
    assert header["nnscratch_version"] == nn.__version__
    assert header["input_shape"] == [1, 28, 28]
    assert header["metadata"] == {"classes": [0, 1, 2, 3, 4]}
    arch = {layer["name"]: layer for layer in header["architecture"]}
    assert [layer["name"] for layer in header["architecture"]] == net.names()
    assert arch["conv1"] == {"name": "conv1", "class": "Conv2d", "args": {
        "in_channels": 1, "out_channels": 4, "kernel_size": [3, 3], "stride": [1, 1], "padding": [0, 0],
        "bias": True, "dtype": "float32"}}
    assert arch["fc1"]["args"] == {"in_features": 576, "out_features": 16, "bias": True, "dtype": "float32"}
    assert arch["pool"] == {"name": "pool", "class": "MaxPool2d",
                            "args": {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}}
    assert arch["dropout1"]["args"] == {"p": 0.25} and arch["dropout2"]["args"] == {"p": 0.5}
    assert arch["flatten"]["args"] == {"start_dim": 1} and arch["relu1"] == {"name": "relu1", "class": "ReLU", "args": {}}
    # input_shape is checked against the layers; None is stored as null
    with pytest.raises(ValueError, match="does not fit"):
        transfer.save_weights(net, tmp_path / "bad.safetensors", input_shape=(3, 28, 28))
    transfer.save_weights(net, path)
    assert serialization.load_file(path)[1]["input_shape"] is None


def test_every_hyper_parameter_survives_load_model(tmp_path):
    nn.manual_seed(5)
    inner = nn.Sequential(OrderedDict(conv=nn.Conv2d(5, 2, 1, bias=False), act=nn.ReLU()))
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 5, (3, 2), stride=2, padding=1, bias=False)),
        ("relu1", nn.ReLU()),
        ("avg", nn.AvgPool2d(2, stride=1, padding=1)),
        ("block", inner),
        ("max", nn.MaxPool2d(2)),
        ("drop", nn.Dropout(0.3)),
        ("flat", nn.Flatten(1)),
        ("fc", nn.Dense(12, 7, bias=False)),
        ("soft", nn.Softmax(dim=1)),
        ("logsoft", nn.LogSoftmax(dim=-1)),
    ]))
    x = random_images(3, seed=1, channels=3, size=8)
    expected = eval_output(net, x)
    path = tmp_path / "w.safetensors"
    transfer.save_weights(net, path, input_shape=(3, 8, 8))
    rebuilt = transfer.load_model(path)
    assert transfer.architecture(rebuilt) == transfer.architecture(net)
    assert rebuilt.conv1.stride == (2, 2) and rebuilt.conv1.padding == (1, 1) and rebuilt.conv1.bias is None
    assert rebuilt.avg.stride == (1, 1) and rebuilt.drop.p == 0.3 and rebuilt.logsoft.dim == -1
    assert isinstance(rebuilt.block, nn.Sequential) and rebuilt.block.conv.bias is None
    np.testing.assert_array_equal(eval_output(rebuilt, x), expected)
    # build_model gives the same architecture with fresh values
    fresh = transfer.build_model(transfer.architecture(net))
    assert [(n, p.shape) for n, p in fresh.named_parameters()] == [(n, p.shape) for n, p in net.named_parameters()]


def test_float64_model_round_trip(tmp_path):
    net = small_net().double()
    x = random_images(6, seed=1, dtype=np.float64)
    path = tmp_path / "w64.safetensors"
    transfer.save_weights(net, path)
    rebuilt = transfer.load_model(path)
    assert rebuilt.fc1.weight.dtype == np.float64
    np.testing.assert_array_equal(eval_output(rebuilt, x), eval_output(net, x))


def test_load_model_does_not_advance_the_library_generator(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(small_net(), path)
    nn.manual_seed(7)
    a = nn.rng.default_generator().random(3)
    nn.manual_seed(7)
    transfer.load_model(path)
    np.testing.assert_array_equal(nn.rng.default_generator().random(3), a)


def test_load_weights_accepts_a_fit_checkpoint(tmp_path):
    net = small_net(seed=3)
    path = tmp_path / "ckpt.safetensors"
    nn.training.save_checkpoint(path, net, nn.SGD(net.parameters(), lr=0.1, momentum=0.9), epoch=1)
    other = small_net(seed=4)
    assert transfer.load_weights(other, path).loaded == PARAM_NAMES
    x = random_images(6, seed=1)
    np.testing.assert_array_equal(eval_output(other, x), eval_output(net, x))


# ---------------------------------------------------------------------------
# strict / non-strict loading, mismatch report, skip
# ---------------------------------------------------------------------------


def test_strict_mismatch_lists_every_layer_with_both_shapes_and_loads_nothing(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(small_net(num_classes=5, hidden=32), path)
    target = small_net(num_classes=3, hidden=16, seed=9)
    before = params_copy(target)
    with pytest.raises(ValueError) as info:
        transfer.load_weights(target, path)
    message = str(info.value)
    for piece in ("fc1.weight: model (16, 576) vs file (32, 576)", "fc1.bias: model (16,) vs file (32,)",
                  "fc2.weight: model (3, 16) vs file (5, 32)", "fc2.bias: model (3,) vs file (5,)"):
        assert piece in message
    assert "conv1" not in message
    for name, value in before.items():  # strict failure: nothing loaded, not even the conv layers
        np.testing.assert_array_equal(dict(target.named_parameters())[name].data, value)


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    source = small_net(num_classes=5, seed=1)
    path = tmp_path / "w.safetensors"
    transfer.save_weights(source, path)
    target = small_net(num_classes=3, seed=2)
    old_fc2 = target.fc2.weight.data.copy()
    report = transfer.load_weights(target, path, strict=False)
    assert not report.ok
    assert report.loaded == PARAM_NAMES[:6]
    assert report.mismatched == [("fc2.weight", (3, 16), (5, 16)), ("fc2.bias", (3,), (5,))]
    np.testing.assert_array_equal(target.conv2.weight.data, source.conv2.weight.data)
    np.testing.assert_array_equal(target.fc2.weight.data, old_fc2)
    text = str(report)
    assert "6 loaded" in text and "2 mismatched" in text
    assert "fc2.weight" in text and "MISMATCH" in text and "(5, 16)" in text and "(3, 16)" in text


def test_skip_excludes_names_and_prefixes(tmp_path):
    path = tmp_path / "w.safetensors"
    source = small_net(num_classes=5, seed=1)
    transfer.save_weights(source, path)
    target = small_net(num_classes=3, seed=2)
    report = transfer.load_weights(target, path, skip="fc2")  # strict, yet fine: fc2 is skipped
    assert report.ok and report.skipped == ["fc2.weight", "fc2.bias"] and report.loaded == PARAM_NAMES[:6]
    report = transfer.load_weights(small_net(seed=3), path, skip=["conv1", "fc1.bias"])
    assert report.skipped == ["conv1.weight", "conv1.bias", "fc1.bias"]
    with pytest.raises(ValueError, match="'fc3' matches no parameter"):
        transfer.load_weights(small_net(), path, skip="fc3")


def test_missing_and_unexpected(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(small_net(), path)
    bigger = transfer.extend(small_net(), [("relu4", nn.ReLU()), ("fc3", nn.Dense(5, 2))])
    with pytest.raises(ValueError, match=r"missing from the file: fc3.weight \(2, 5\), fc3.bias \(2,\)"):
        transfer.load_weights(bigger, path)
    report = transfer.load_weights(bigger, path, strict=False)
    assert report.missing == ["fc3.weight", "fc3.bias"] and len(report.loaded) == 8
    smaller = transfer.cut(small_net(), before="fc2")
    with pytest.raises(ValueError, match="unexpected in the file.*fc2.weight.*fc2.bias"):
        transfer.load_weights(smaller, path)
    assert transfer.load_weights(smaller, path, strict=False).unexpected == ["fc2.weight", "fc2.bias"]


def test_loading_keeps_requires_grad(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(small_net(seed=1), path)
    target = transfer.freeze(small_net(seed=2), "conv1")
    transfer.load_weights(target, path)
    assert transfer.frozen_parameters(target) == ["conv1.weight", "conv1.bias"]


# ---------------------------------------------------------------------------
# hostile and damaged files
# ---------------------------------------------------------------------------


class _Exploit:
    """Pickles to 'call pathlib.Path.touch(marker)': unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _raw_safetensors(path, header, data=b""):
    text = json.dumps(header).encode()
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)


def _all_loaders(path):
    yield lambda: transfer.load_weights(small_net(), path)
    yield lambda: transfer.load_weights(small_net(), path, strict=False)
    yield lambda: transfer.load_model(path)


def test_pickle_payloads_are_refused_and_never_executed(tmp_path):
    # the payload is real: unpickling a copy aimed at another file does create that file
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Exploit(proof)))
    assert proof.exists()

    marker = tmp_path / "pwned"
    pickled = tmp_path / "weights.safetensors"
    pickled.write_bytes(pickle.dumps({"conv1.weight": _Exploit(marker)}))
    npz = tmp_path / "weights.npz"
    np.savez(npz, payload=np.array([_Exploit(marker)], dtype=object))  # object array: pickled inside the zip
    for path in (pickled, npz):
        for load in _all_loaders(path):
            with pytest.raises(ValueError, match="not a valid safetensors file"):
                load()
    assert not marker.exists()


def test_truncated_files_are_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    transfer.save_weights(small_net(), good)
    content = good.read_bytes()
    for i, cut_at in enumerate((3, 8, 40, len(content) // 2, len(content) - 1)):
        path = tmp_path / f"cut{i}.safetensors"
        path.write_bytes(content[:cut_at])
        for load in _all_loaders(path):
            with pytest.raises(ValueError, match="not a valid safetensors file"):
                load()


def test_header_claiming_gigabytes_is_refused_quickly(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 5 * 2**30) + b"{}")
    for load in _all_loaders(path):
        with pytest.raises(ValueError, match="header length"):
            load()


def test_header_lying_about_offsets_is_refused(tmp_path):
    beyond = tmp_path / "beyond.safetensors"
    _raw_safetensors(beyond, {"conv1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    inconsistent = tmp_path / "inconsistent.safetensors"
    _raw_safetensors(inconsistent, {"conv1.bias": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 16)
    gigantic = tmp_path / "gigantic.safetensors"
    _raw_safetensors(gigantic, {"fc1.weight": {"dtype": "F32", "shape": [2**20, 2**20],
                                               "data_offsets": [0, 2**42]}}, b"\0" * 16)
    for path, reason in ((beyond, "outside"), (inconsistent, "need"), (gigantic, "outside")):
        for load in _all_loaders(path):
            with pytest.raises(ValueError, match=reason):
                load()


@pytest.mark.parametrize("dtype", ["BOOL", "O", "STR", "object", "F16"])
def test_non_numeric_or_unsupported_dtype_is_refused(tmp_path, dtype):
    path = tmp_path / "dtype.safetensors"
    size = 4 * (2 if dtype == "F16" else 1)  # the bytes of 4 values (a dtype the library knows must have them)
    _raw_safetensors(path, {"conv1.bias": {"dtype": dtype, "shape": [4], "data_offsets": [0, size]}}, b"\0" * size)
    for load in _all_loaders(path):
        with pytest.raises(ValueError, match="unsupported dtype"):
            load()


def test_malformed_nnscratch_headers_are_refused(tmp_path):
    net = small_net()
    good_arch = transfer.architecture(net)
    arrays = net.state_dict()

    def write(name, header):
        path = tmp_path / name
        serialization.save_file(path, arrays, header)
        return path

    base = {"format": transfer.FORMAT, "format_version": 1, "nnscratch_version": "0.1.0",
            "input_shape": None, "metadata": {}}
    marker = tmp_path / "pwned"

    def conv1_with(**args):
        return [{**good_arch[0], "args": {**good_arch[0]["args"], **args}}, *good_arch[1:]]

    cases = {
        "foreign class": ([{"name": "conv1", "class": "os.system", "args": {"command": f"touch {marker}"}}],
                          "cannot be rebuilt"),
        "dunder class": ([{"name": "x", "class": "__import__", "args": {}}], "cannot be rebuilt"),
        "unknown argument": (conv1_with(__class__=1), "unknown arguments"),
        "bad type": (conv1_with(out_channels="4"), "positive int"),
        "not a list": ({"conv1": "Conv2d"}, "must be a list"),
        "the base class": ([{"name": "m", "class": "Module", "args": {}}], "'Module', which cannot be rebuilt"),
        "a generator": (conv1_with(generator=0), r"unknown arguments \['generator'\]"),
        "object dtype": (conv1_with(dtype="object"),
                         r"layer 'conv1' \(Conv2d\): Conv2d\(1, 4, kernel_size=\[3, 3\]\): dtype must be float32 or float64"),
        "structured dtype": (conv1_with(dtype={"names": ["a"]}), "dtype must be float32 or float64"),
        "bias as text": (conv1_with(bias="no"), "bias must be True or False"),
        "kernel as object": (conv1_with(kernel_size={"h": 3}), "kernel_size must be an int or a pair of ints"),
        "missing argument": ([{"name": "fc", "class": "Dense", "args": {"in_features": 3}}],
                             "lacks the argument 'out_features'"),
        "start_dim as text": ([*good_arch[:6], {"name": "flatten", "class": "Flatten", "args": {"start_dim": "1"}},
                               *good_arch[7:]], r"layer 'flatten' \(Flatten\): Flatten\(start_dim='1'\): start_dim must be an"),
        "enormous layer": ([{"name": "conv1", "class": "Conv2d", "args": {
            "in_channels": 1, "out_channels": 4, "kernel_size": 3}},
            {"name": "fc1", "class": "Dense", "args": {"in_features": 10**6, "out_features": 10**6}}],
            r"architecture \(1000000, 1000000\) vs file \(16, 576\)"),
    }
    for i, (arch, reason) in enumerate(cases.values()):
        path = write(f"case{i}.safetensors", {**base, "architecture": arch})
        with pytest.raises(ValueError, match=reason) as info:
            transfer.load_model(path)
        assert str(info.value).startswith(f"load_model({path})"), info.value  # every refusal names the file
    assert not marker.exists()
    newer = write("newer.safetensors", {**base, "format_version": 99, "architecture": good_arch})
    with pytest.raises(ValueError, match="format version 99"):
        transfer.load_weights(net, newer)
    other = write("other.safetensors", {"format": "something-else"})
    with pytest.raises(ValueError, match="not an nnscratch weight file"):
        transfer.load_weights(net, other)


def test_object_arrays_are_refused_from_a_state_dict():
    net = small_net()
    before = params_copy(net)
    state = {name: value for name, value in net.state_dict().items()}
    state["conv1.bias"] = np.array([object()] * 4, dtype=object)
    with pytest.raises(ValueError, match="object arrays are refused"):
        transfer.from_torch_state_dict(net, state)
    for name, value in before.items():
        np.testing.assert_array_equal(dict(net.named_parameters())[name].data, value)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    first = small_net(seed=1)
    transfer.save_weights(first, path)
    original = path.read_bytes()
    with pytest.raises(ValueError):  # not JSON: refused before anything is written
        transfer.save_weights(small_net(seed=2), path, metadata={"bad": object()})

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(serialization.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        transfer.save_weights(small_net(seed=3), path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left


# ---------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------


def test_freeze_by_name_list_parameter_and_all():
    net = small_net()
    assert transfer.freeze(net, "conv1") is net
    assert transfer.frozen_parameters(net) == ["conv1.weight", "conv1.bias"]
    transfer.freeze(net, ["conv2", "fc1.bias"])
    assert transfer.frozen_parameters(net) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.bias"]
    transfer.unfreeze(net, "conv1")
    assert transfer.frozen_parameters(net) == ["conv2.weight", "conv2.bias", "fc1.bias"]
    transfer.freeze(net, "relu1")  # a layer without parameters: nothing to do
    transfer.freeze(net)
    assert transfer.trainable_parameters(net) == []
    transfer.unfreeze(net)
    assert transfer.frozen_parameters(net) == []
    with pytest.raises(KeyError, match="no layer or parameter 'conv9'"):
        transfer.freeze(net, "conv9")


def test_freeze_to_follows_fastai():
    net = small_net()
    transfer.freeze_to(net, "fc1")
    assert transfer.trainable_parameters(net) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    transfer.freeze_to(net, "conv2")
    assert transfer.frozen_parameters(net) == ["conv1.weight", "conv1.bias"]
    transfer.freeze_to(net, -1)
    assert transfer.trainable_parameters(net) == ["fc2.weight", "fc2.bias"]
    transfer.freeze_to(net, 0)
    assert transfer.frozen_parameters(net) == []
    with pytest.raises(KeyError):
        transfer.freeze_to(net, "nope")


class _Spy:
    def __init__(self, layer):
        self.layer, self.calls = layer, []
        self.original = layer.backward

    def __call__(self, grad, need_input_grad=True):
        self.calls.append(need_input_grad)
        return self.original(grad, need_input_grad=need_input_grad)


def _forward_backward(net, need_input_grad=False):
    x = random_images(4, seed=1)
    y = np.array([0, 1, 2, 3])
    criterion = nn.CrossEntropyLoss()
    criterion(net(x), y)
    return net.backward(criterion.backward(), need_input_grad=need_input_grad)


def test_backward_stops_below_the_lowest_trainable_layer(monkeypatch):
    net = small_net()
    spies = {name: _Spy(net[name]) for name in ("conv1", "conv2", "fc1")}
    for name, spy in spies.items():
        monkeypatch.setattr(net[name], "backward", spy)
    transfer.freeze(net, ["conv1", "conv2"])
    assert _forward_backward(net) is None
    assert spies["conv1"].calls == [] and spies["conv2"].calls == []  # not even called
    assert spies["fc1"].calls == [False]
    assert all(p.grad is None for p in list(net.conv1.parameters()) + list(net.conv2.parameters()))
    assert net.fc1.weight.grad is not None and net.fc2.weight.grad is not None

    net.zero_grad()
    transfer.unfreeze(net, "conv2")
    _forward_backward(net)
    assert spies["conv1"].calls == [] and spies["conv2"].calls == [False]  # conv2: weights only, no input grad
    assert net.conv1.weight.grad is None and net.conv2.weight.grad is not None


def test_frozen_layer_computes_no_weight_gradient(monkeypatch):
    net = small_net()
    transfer.freeze(net, "fc1")  # a frozen layer in the middle: backward must go through it
    calls = []
    original = nn.ops.linear_backward

    def spy(*args, **kwargs):
        calls.append(kwargs["need_weight_grad"])
        return original(*args, **kwargs)

    monkeypatch.setattr(nn.ops, "linear_backward", spy)
    _forward_backward(net, need_input_grad=True)
    assert calls == [True, False]  # fc2 (trainable), then fc1 (frozen: no weight gradient computed)
    assert net.fc1.weight.grad is None and net.fc1.bias.grad is None
    assert net.conv1.weight.grad is not None and net.fc2.weight.grad is not None


def _fit(net, optimizer, epochs=2):
    return nn.fit(net, nn.CrossEntropyLoss(), optimizer, random_loader(), epochs=epochs, progress=False)


def test_frozen_parameters_bit_identical_after_fit_with_momentum_and_weight_decay():
    net = small_net()
    transfer.freeze(net, ["conv1", "conv2"])
    optimizer = nn.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    snapshot = transfer.frozen_snapshot(net)
    assert list(snapshot) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    before = params_copy(net)
    _fit(net, optimizer)
    transfer.assert_frozen_unchanged(net, snapshot)
    assert not np.array_equal(net.fc1.weight.data, before["fc1.weight"])
    assert all(id(p) not in optimizer.state for p in net.conv1.parameters())  # no momentum buffer either


def test_frozen_after_the_optimizer_had_momentum_buffers():
    net = small_net()
    optimizer = nn.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    _fit(net, optimizer, epochs=1)
    conv_params = list(net.conv1.parameters()) + list(net.conv2.parameters())
    buffers = {id(p): optimizer.state[id(p)]["momentum_buffer"].copy() for p in conv_params}
    assert all(np.any(b != 0) for b in buffers.values())  # momentum would keep moving them
    transfer.freeze(net, ["conv1", "conv2"])
    snapshot = transfer.frozen_snapshot(net)
    fc1 = net.fc1.weight.data.copy()
    _fit(net, optimizer, epochs=1)
    transfer.assert_frozen_unchanged(net, snapshot)
    for p in conv_params:
        np.testing.assert_array_equal(optimizer.state[id(p)]["momentum_buffer"], buffers[id(p)])
    assert not np.array_equal(net.fc1.weight.data, fc1)


def test_sgd_leaves_a_frozen_parameter_alone_even_with_a_stale_gradient():
    # fit() clears gradients, so there a frozen parameter also has no .grad; here it keeps one
    # from before the freeze, and the optimizer (momentum + weight decay, built earlier) must
    # still not touch it: no update, no decay, no momentum-buffer change.
    net = small_net()
    optimizer = nn.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        _forward_backward(net)
        optimizer.step()
    optimizer.zero_grad()
    _forward_backward(net)  # fresh gradients on every parameter
    transfer.freeze(net, "conv1")
    assert net.conv1.weight.grad is not None
    snapshot = transfer.frozen_snapshot(net)
    buffer = optimizer.state[id(net.conv1.weight)]["momentum_buffer"].copy()
    fc1 = net.fc1.weight.data.copy()
    optimizer.step()
    optimizer.step()
    transfer.assert_frozen_unchanged(net, snapshot)
    np.testing.assert_array_equal(optimizer.state[id(net.conv1.weight)]["momentum_buffer"], buffer)
    assert not np.array_equal(net.fc1.weight.data, fc1)


def test_assert_frozen_unchanged_names_the_changed_parameters():
    net = transfer.freeze(small_net(), ["conv1", "fc1"])
    snapshot = transfer.frozen_snapshot(net)
    transfer.assert_frozen_unchanged(net, snapshot)
    net.conv1.bias.data[0] = np.nextafter(net.conv1.bias.data[0], np.float32(np.inf))  # one ulp
    net.fc1.weight.data[0, 0] += 1
    with pytest.raises(AssertionError) as info:
        transfer.assert_frozen_unchanged(net, snapshot)
    message = str(info.value)
    assert "conv1.bias" in message and "fc1.weight" in message
    assert "conv1.weight" not in message and "fc1.bias" not in message


# ---------------------------------------------------------------------------
# surgery
# ---------------------------------------------------------------------------


def test_replace_head():
    net = small_net(num_classes=5)
    transfer.freeze(net)
    names = net.names()
    old = net.fc2
    assert transfer.replace_head(net, 3) is net
    assert net.names() == names and net.fc2 is not old
    assert isinstance(net.fc2, nn.Dense) and (net.fc2.in_features, net.fc2.out_features) == (16, 3)
    assert net.fc2.weight.requires_grad and net.fc2.bias.requires_grad
    assert eval_output(net, random_images(6, seed=1)).shape == (6, 3)

    seed = transfer.replace_head(seed_net(), 4)
    assert seed.names()[-2:] == ["fc2", "log_softmax"] and seed.fc2.weight.shape == (4, 128)


def test_replace_head_reinit_false_keeps_rows():
    net = small_net(num_classes=5)
    w, b = net.fc2.weight.data.copy(), net.fc2.bias.data.copy()
    x = random_images(6, seed=1)
    out = eval_output(net, x)
    transfer.replace_head(net, 5, reinit=False)  # same size: the layer's values are kept exactly
    np.testing.assert_array_equal(eval_output(net, x), out)
    transfer.replace_head(net, 3, reinit=False)
    np.testing.assert_array_equal(net.fc2.weight.data, w[:3])
    np.testing.assert_array_equal(net.fc2.bias.data, b[:3])
    np.testing.assert_array_equal(eval_output(net, x), out[:, :3])
    transfer.replace_head(net, 7, reinit=False)
    np.testing.assert_array_equal(net.fc2.weight.data[:3], w[:3])
    assert net.fc2.weight.shape == (7, 16)


def test_replace_head_generator_is_reproducible():
    a = transfer.replace_head(small_net(), 3, generator=np.random.default_rng(4))
    b = transfer.replace_head(small_net(), 3, generator=np.random.default_rng(4))
    np.testing.assert_array_equal(a.fc2.weight.data, b.fc2.weight.data)


def test_cut_and_extend_share_layers():
    net = small_net()
    body = transfer.cut(net, before="fc2")
    assert body.names() == net.names()[:-1] and body.fc1 is net.fc1
    assert transfer.cut(net, before=2).names() == ["conv1", "relu1"]
    assert transfer.cut(net, before=-1).names() == body.names()
    with pytest.raises(ValueError, match=r"before='fc9' is not a layer.*first layer NOT run.*'conv1'.*'fc2'"):
        transfer.cut(net, before="fc9")
    with pytest.raises(ValueError, match=r"before=99 .*'fc2'\] \(or a position from -\d+ to \d+\)"):
        transfer.cut(net, before=99)
    new = transfer.extend(transfer.cut(net, before="fc1"), [("fc1", nn.Dense(576, 8)), ("relu3", nn.ReLU()),
                                                     ("out", nn.Dense(8, 2))])
    assert new.conv2 is net.conv2 and new.fc1 is not net.fc1
    assert eval_output(new, random_images(6, seed=1)).shape == (6, 2)
    with pytest.raises(ValueError, match="exists already"):
        transfer.extend(net, [("conv1", nn.ReLU())])
    assert net.names()[-1] == "fc2"  # the original is untouched


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_adapt_input_channels_one_to_three(dtype, tol):
    net = small_net().to(dtype)
    transfer.freeze(net, "conv1")
    gray = random_images(4, seed=1, dtype=dtype)
    expected = eval_output(net, gray)
    w = net.conv1.weight.data.copy()
    transfer.adapt_input_channels(net, 3)
    assert net.conv1.in_channels == 3 and net.conv1.weight.shape == (4, 3, 3, 3)
    assert not net.conv1.weight.requires_grad
    np.testing.assert_allclose(net.conv1.weight.data, np.repeat(w / 3, 3, axis=1), rtol=1e-6)
    out = eval_output(net, np.repeat(gray, 3, axis=1))
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_adapt_input_channels_three_to_one(dtype, tol):
    nn.manual_seed(0)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, dtype=dtype)), ("relu1", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc", nn.Dense(4 * 6 * 6, 3, dtype=dtype))]))
    gray = random_images(4, seed=1, size=8, dtype=dtype)
    expected = eval_output(net, np.repeat(gray, 3, axis=1))
    w = net.conv1.weight.data.copy()
    transfer.adapt_input_channels(net, 1)
    np.testing.assert_allclose(net.conv1.weight.data, w.sum(axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(eval_output(net, gray), expected, rtol=tol, atol=tol)
    transfer.adapt_input_channels(net, 1)  # already 1: unchanged
    with pytest.raises(ValueError, match="3 -> 2"):
        transfer.adapt_input_channels(transfer.adapt_input_channels(net, 3), 2)


# ---------------------------------------------------------------------------
# feature extraction, parameter groups, fine-tuning
# ---------------------------------------------------------------------------


def test_extract_features_equals_the_cut_model_in_eval_mode():
    net = small_net()
    net.train()
    x = random_images(10, seed=1)
    features = transfer.extract_features(net, x, before="fc2", batch_size=3)
    assert features.shape == (10, 16)
    assert net.training and all(m.training for m in net.modules())  # mode restored
    body = transfer.cut(net, before="fc2").eval()
    expected = body(x)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(transfer.extract_features(net, x, before="fc2", batch_size=10), expected)
    assert all(p.grad is None for p in net.parameters())  # forward only
    flat = transfer.extract_features(net, x, before="fc1", transform=lambda b: b * 1.0)
    assert flat.shape == (10, 576)
    net.eval()
    transfer.extract_features(net, x, before="fc1")
    assert not net.training  # eval mode restored too
    with pytest.raises(ValueError, match=r"extract_features: before='fc9' is not a layer.*'fc1'"):
        transfer.extract_features(net, x, before="fc9")


def test_param_groups_apply_their_learning_rates():
    net = small_net()
    groups = transfer.param_groups(net, lr=0.1, body_lr=0.01)
    assert [g["name"] for g in groups] == ["body", "head"]
    assert [g["lr"] for g in groups] == [0.01, 0.1]
    assert groups[1]["params"] == [net.fc2.weight, net.fc2.bias]
    assert len(groups[0]["params"]) == 6
    optimizer = nn.SGD(groups, lr=0.1)
    rng = np.random.default_rng(0)
    before, grads = {}, {}
    for name, p in net.named_parameters():
        before[name] = p.data.copy()
        p.grad = grads[name] = rng.standard_normal(p.shape).astype(np.float32)
    optimizer.step()
    for name, p in net.named_parameters():
        lr = 0.1 if name.startswith("fc2.") else 0.01
        np.testing.assert_array_equal(p.data, before[name] - np.float32(lr) * grads[name])

    assert [g["lr"] for g in transfer.param_groups(net, lr=0.1)] == [0.1, 0.1]
    two = transfer.param_groups(net, lr=0.1, body_lr=0.0, head=("fc1", "fc2"))
    assert len(two[1]["params"]) == 4
    with pytest.raises(ValueError, match=r"param_groups: head='fc9' names no layer.*'conv1'.*head=None takes .*'fc2'"):
        transfer.param_groups(net, 0.1, head="fc9")


def test_fine_tune_two_phases():
    net = small_net(num_classes=5)
    transfer.replace_head(net, 3, generator=np.random.default_rng(0))
    loader = random_loader(num_classes=3)
    before = params_copy(net)
    history = transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=1, full_epochs=0,
                                 lr=0.05, body_lr=0.005)
    assert history.epochs == 1
    body = [n for n in PARAM_NAMES if not n.startswith("fc2")]
    for name in body:  # phase 1 only: the body is frozen, bit for bit
        assert dict(net.named_parameters())[name].data.tobytes() == before[name].tobytes()
    assert not np.array_equal(net.fc2.weight.data, before["fc2.weight"])
    assert transfer.trainable_parameters(net) == ["fc2.weight", "fc2.bias"]

    history = transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=1, full_epochs=1,
                                 lr=0.05, body_lr=0.005, val_loader=loader)
    assert history.epochs == 2 and len(history.val_accuracy) == 2
    steps = len(loader)
    assert history.epoch_batches == [steps, steps] and len(history.batch_loss) == 2 * steps
    assert transfer.frozen_parameters(net) == []
    assert not np.array_equal(net.conv1.weight.data, before["conv1.weight"])


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def test_summary_rows_and_warnings():
    net = small_net()
    transfer.freeze(net, "conv1")
    optimizer = nn.SGD(transfer.param_groups(net, lr=0.1, body_lr=0.01), lr=0.1)
    transfer.replace_head(net, 3)  # the optimizer now lacks the new head and holds the old one
    text = transfer.summary(net, optimizer)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:13]}
    assert list(rows) == net.names()
    assert rows["conv1"][:7] == ["conv1", "Conv2d", "(1,", "4,", "26,", "26)", "40"]
    assert "frozen" in rows["conv1"] and "yes" in rows["conv1"] and "0.01" in rows["conv1"]
    assert "trainable" in rows["fc1"] and "yes" in rows["fc1"]
    assert "no" in rows["fc2"] and "(1, 3)" in text
    assert rows["relu1"][-4:-1] == ["-", "-", "-"]
    shares = [float(r[-1].rstrip("%")) for r in rows.values()]
    assert abs(sum(shares) - 100) < 1 and max(shares) == float(rows["conv2"][-1].rstrip("%"))
    assert "9,431 trainable, 40 frozen" in text
    warning = [line for line in text.splitlines() if "NOT in the optimizer" in line]
    assert len(warning) == 1 and "fc2.weight, fc2.bias" in warning[0]
    assert "optimizer holds 2 parameter(s) that are not in this model" in text
    assert [line for line in text.splitlines() if line.startswith("note: frozen")][0].endswith("conv1.weight, conv1.bias")

    clean = transfer.summary(net)
    assert "WARNING" not in clean and "note" not in clean
    partly = transfer.summary(transfer.freeze(small_net(), "fc1.bias"))
    assert "partly" in partly
    bad = transfer.summary(net, input_shape=(1, 3, 28, 28))
    assert "WARNING: input_shape (1, 3, 28, 28) does not fit the model: layer 'conv1'" in bad
    assert "every parameter is frozen" in transfer.summary(transfer.freeze(small_net()))


# ---------------------------------------------------------------------------
# PyTorch interoperability
# ---------------------------------------------------------------------------


class _FakeTensor:
    """Duck-typed tensor: .detach().cpu().numpy(), as torch.Tensor."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_state_dict_round_trip_without_torch():
    source, target = small_net(seed=1), small_net(seed=2)
    exported = transfer.to_torch_state_dict(source)
    assert list(exported) == PARAM_NAMES and all(a.flags.c_contiguous for a in exported.values())
    exported["fc1.weight"][0, 0] += 1  # a copy: the model is unaffected
    assert exported["fc1.weight"][0, 0] != source.fc1.weight.data[0, 0]
    report = transfer.from_torch_state_dict(target, {k: _FakeTensor(v) for k, v in source.state_dict().items()})
    assert report.ok and report.loaded == PARAM_NAMES
    x = random_images(6, seed=1)
    np.testing.assert_array_equal(eval_output(target, x), eval_output(source, x))
    with pytest.raises(ValueError, match="fc2.weight: model \\(3, 16\\) vs state dict \\(5, 16\\)"):
        transfer.from_torch_state_dict(small_net(num_classes=3), source.state_dict())


def test_the_library_never_imports_torch(tmp_path):
    code = (
        "import sys, numpy as np, nnscratch as nn\n"
        "from nnscratch import transfer\n"
        "net = nn.models.keras_transfer_net(filters=4, hidden=16)\n"
        f"transfer.save_weights(net, {str(tmp_path / 'w.safetensors')!r})\n"
        f"transfer.load_model({str(tmp_path / 'w.safetensors')!r})\n"
        "transfer.from_torch_state_dict(net, transfer.to_torch_state_dict(net))\n"
        "transfer.summary(net)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).resolve().parent.parent)


PARITY = {}


def test_pytorch_parity_seed_net():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tnet = torch_reference.seed_net().eval()
    net = seed_net().eval()
    x = random_images(8, seed=1)

    report = transfer.from_torch_state_dict(net, tnet.state_dict())
    assert report.ok and report.loaded == PARAM_NAMES
    with torch.no_grad():
        expected = tnet(torch.from_numpy(x)).numpy()
    PARITY["float32"] = float(np.max(np.abs(net(x) - expected)))
    assert PARITY["float32"] <= 1e-5

    tnet.double()
    net.double()
    transfer.from_torch_state_dict(net, tnet.state_dict())
    assert net.conv1.weight.dtype == np.float64
    x64 = x.astype(np.float64)
    with torch.no_grad():
        expected64 = tnet(torch.from_numpy(x64)).numpy()
    PARITY["float64"] = float(np.max(np.abs(net(x64) - expected64)))
    assert PARITY["float64"] <= 1e-10

    # export: an nnscratch-initialized network loaded into PyTorch gives the same outputs
    nn.manual_seed(11)
    mine = seed_net().eval()
    other = torch_reference.seed_net().eval()
    missing, unexpected = other.load_state_dict(
        {k: torch.from_numpy(v) for k, v in transfer.to_torch_state_dict(mine).items()}, strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        exported = other(torch.from_numpy(x)).numpy()
    PARITY["export float32"] = float(np.max(np.abs(mine(x) - exported)))
    assert PARITY["export float32"] <= 1e-5
    print("PyTorch parity (max |difference| of log-probabilities):", PARITY)

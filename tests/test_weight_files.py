"""Tests of weight files (nnscratch.transfer.save_weights, load_weights, load_model): round trips,
strict and non-strict loading with its report, and hostile or damaged files refused before anything
is built or changed.

Small models on random data only (``strategies.transfer_net``), so the whole file runs in seconds.
"""
import json
import pathlib
import pickle
import struct
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import serialization, transfer
from nnscratch.io import atomic

from strategies import TRANSFER_NET_PARAMS, eval_output, params_copy, random_images, transfer_net


# ---------------------------------------------------------------------------
# weight files: round trip
# ---------------------------------------------------------------------------


def test_save_load_round_trip_identical_outputs(tmp_path):
    net = transfer_net(seed=0)
    x = random_images(6, seed=1)
    expected = eval_output(net, x)
    path = tmp_path / "w.safetensors"
    transfer.save_weights(net, path, metadata={"task": "digits 0-4"}, input_shape=(1, 28, 28))

    other = transfer_net(seed=123)
    assert not np.array_equal(eval_output(other, x), expected)
    report = transfer.load_weights(other, path)
    assert report.ok and report.loaded == TRANSFER_NET_PARAMS
    assert report.missing == report.unexpected == report.mismatched == report.skipped == []
    assert report.header["metadata"] == {"task": "digits 0-4"}
    np.testing.assert_array_equal(eval_output(other, x), expected)

    rebuilt = transfer.load_model(path)
    assert rebuilt.names() == net.names()
    assert transfer.architecture(rebuilt) == transfer.architecture(net)
    np.testing.assert_array_equal(eval_output(rebuilt, x), expected)
    assert all(p.requires_grad for p in rebuilt.parameters()) and rebuilt.training


def test_header_records_format_version_architecture_and_input_shape(tmp_path):
    net = transfer_net()
    path = tmp_path / "w.safetensors"
    transfer.save_weights(net, path, metadata={"classes": [0, 1, 2, 3, 4]}, input_shape=(1, 28, 28))
    arrays, header = serialization.load_file(path)
    assert sorted(arrays) == sorted(TRANSFER_NET_PARAMS)  # (safetensors orders tensors its own way)
    assert header["format"] == "nnscratch-weights" and header["format_version"] == 1
    assert header["nnscratch_version"] == nn.__version__
    assert header["input_shape"] == [1, 28, 28]
    assert header["metadata"] == {"classes": [0, 1, 2, 3, 4]}
    arch = {layer["name"]: layer for layer in header["architecture"]}
    assert [layer["name"] for layer in header["architecture"]] == net.names()
    assert arch["conv1"] == {"name": "conv1", "class": "Conv2d", "args": {
        "in_channels": 1, "out_channels": 4, "kernel_size": [3, 3], "stride": [1, 1], "padding": [0, 0],
        "bias": True, "dtype": "float32", "algorithm": "auto"}}
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
    net = transfer_net().double()
    x = random_images(6, seed=1, dtype=np.float64)
    path = tmp_path / "w64.safetensors"
    transfer.save_weights(net, path)
    rebuilt = transfer.load_model(path)
    assert rebuilt.fc1.weight.dtype == np.float64
    np.testing.assert_array_equal(eval_output(rebuilt, x), eval_output(net, x))


def test_load_model_does_not_advance_the_library_generator(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(transfer_net(), path)
    nn.manual_seed(7)
    a = nn.rng.default_generator().random(3)
    nn.manual_seed(7)
    transfer.load_model(path)
    np.testing.assert_array_equal(nn.rng.default_generator().random(3), a)


def test_load_weights_accepts_a_fit_checkpoint(tmp_path):
    net = transfer_net(seed=3)
    path = tmp_path / "ckpt.safetensors"
    nn.training.save_checkpoint(path, net, nn.SGD(net.parameters(), lr=0.1, momentum=0.9), epoch=1)
    other = transfer_net(seed=4)
    assert transfer.load_weights(other, path).loaded == TRANSFER_NET_PARAMS
    x = random_images(6, seed=1)
    np.testing.assert_array_equal(eval_output(other, x), eval_output(net, x))


# ---------------------------------------------------------------------------
# strict / non-strict loading, mismatch report, skip
# ---------------------------------------------------------------------------


def test_strict_mismatch_lists_every_layer_with_both_shapes_and_loads_nothing(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(transfer_net(num_classes=5, hidden=32), path)
    target = transfer_net(num_classes=3, hidden=16, seed=9)
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
    source = transfer_net(num_classes=5, seed=1)
    path = tmp_path / "w.safetensors"
    transfer.save_weights(source, path)
    target = transfer_net(num_classes=3, seed=2)
    old_fc2 = target.fc2.weight.data.copy()
    report = transfer.load_weights(target, path, strict=False)
    assert not report.ok
    assert report.loaded == TRANSFER_NET_PARAMS[:6]
    assert report.mismatched == [("fc2.weight", (3, 16), (5, 16)), ("fc2.bias", (3,), (5,))]
    np.testing.assert_array_equal(target.conv2.weight.data, source.conv2.weight.data)
    np.testing.assert_array_equal(target.fc2.weight.data, old_fc2)
    text = str(report)
    assert "6 loaded" in text and "2 mismatched" in text
    assert "fc2.weight" in text and "MISMATCH" in text and "(5, 16)" in text and "(3, 16)" in text


def test_skip_excludes_names_and_prefixes(tmp_path):
    path = tmp_path / "w.safetensors"
    source = transfer_net(num_classes=5, seed=1)
    transfer.save_weights(source, path)
    target = transfer_net(num_classes=3, seed=2)
    report = transfer.load_weights(target, path, skip="fc2")  # strict, yet fine: fc2 is skipped
    assert report.ok and report.skipped == ["fc2.weight", "fc2.bias"] and report.loaded == TRANSFER_NET_PARAMS[:6]
    report = transfer.load_weights(transfer_net(seed=3), path, skip=["conv1", "fc1.bias"])
    assert report.skipped == ["conv1.weight", "conv1.bias", "fc1.bias"]
    with pytest.raises(ValueError, match="'fc3' matches no parameter"):
        transfer.load_weights(transfer_net(), path, skip="fc3")


def test_missing_and_unexpected(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(transfer_net(), path)
    bigger = transfer.extend(transfer_net(), [("relu4", nn.ReLU()), ("fc3", nn.Dense(5, 2))])
    with pytest.raises(ValueError, match=r"missing from the file: fc3.weight \(2, 5\), fc3.bias \(2,\)"):
        transfer.load_weights(bigger, path)
    report = transfer.load_weights(bigger, path, strict=False)
    assert report.missing == ["fc3.weight", "fc3.bias"] and len(report.loaded) == 8
    smaller = transfer.cut(transfer_net(), before="fc2")
    with pytest.raises(ValueError, match="unexpected in the file.*fc2.weight.*fc2.bias"):
        transfer.load_weights(smaller, path)
    assert transfer.load_weights(smaller, path, strict=False).unexpected == ["fc2.weight", "fc2.bias"]


def test_loading_keeps_requires_grad(tmp_path):
    path = tmp_path / "w.safetensors"
    transfer.save_weights(transfer_net(seed=1), path)
    target = transfer.freeze(transfer_net(seed=2), "conv1")
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
    yield lambda: transfer.load_weights(transfer_net(), path)
    yield lambda: transfer.load_weights(transfer_net(), path, strict=False)
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
    transfer.save_weights(transfer_net(), good)
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
    net = transfer_net()
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
    net = transfer_net()
    before = params_copy(net)
    state = {name: value for name, value in net.state_dict().items()}
    state["conv1.bias"] = np.array([object()] * 4, dtype=object)
    with pytest.raises(ValueError, match="object arrays are refused"):
        transfer.from_torch_state_dict(net, state)
    for name, value in before.items():
        np.testing.assert_array_equal(dict(net.named_parameters())[name].data, value)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    first = transfer_net(seed=1)
    transfer.save_weights(first, path)
    original = path.read_bytes()
    with pytest.raises(ValueError):  # not JSON: refused before anything is written
        transfer.save_weights(transfer_net(seed=2), path, metadata={"bad": object()})

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        transfer.save_weights(transfer_net(seed=3), path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary file left

"""Tests of nnscratch.transfer's surgery (head, cut, extend, input channels), feature extraction,
fine-tuning with discriminative learning rates, summary and PyTorch interoperability (parity with the
seed's Net when torch is installed). Weight files and freezing have their own files
(test_weight_files.py, test_freezing.py).

Small models on random data only (``strategies.transfer_net``), so the whole file runs in seconds.
"""
import pathlib
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer
from nnscratch.models import seed_net

import torch_reference  # tests/torch_reference.py: the seed's PyTorch Net
from strategies import TRANSFER_NET_PARAMS, eval_output, params_copy, random_images, random_loader, transfer_net


# ---------------------------------------------------------------------------
# surgery
# ---------------------------------------------------------------------------


def test_replace_head():
    net = transfer_net(num_classes=5)
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
    net = transfer_net(num_classes=5)
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
    a = transfer.replace_head(transfer_net(), 3, generator=np.random.default_rng(4))
    b = transfer.replace_head(transfer_net(), 3, generator=np.random.default_rng(4))
    np.testing.assert_array_equal(a.fc2.weight.data, b.fc2.weight.data)


def test_cut_and_extend_share_layers():
    net = transfer_net()
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
    net = transfer_net().to(dtype)
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net(num_classes=5)
    transfer.replace_head(net, 3, generator=np.random.default_rng(0))
    loader = random_loader(num_classes=3)
    before = params_copy(net)
    history = transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=1, full_epochs=0,
                                 lr=0.05, body_lr=0.005)
    assert history.epochs == 1
    body = [n for n in TRANSFER_NET_PARAMS if not n.startswith("fc2")]
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


def test_summary_shows_the_algorithm_each_convolution_runs():
    net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 8, 3, algorithm="direct"))
    rows = [line.split() for line in transfer.summary(net, input_shape=(64, 1, 28, 28)).splitlines()[2:5]]
    assert [row[-1] for row in rows] == ["direct", "winograd", "direct"]  # 1 channel: direct; asked: direct
    rows = [line.split() for line in transfer.summary(net, input_shape=(1, 1, 28, 28)).splitlines()[2:5]]
    assert [row[-1] for row in rows] == ["direct", "direct", "direct"]  # one image: too few tiles


def test_summary_rows_and_warnings():
    net = transfer_net()
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
    assert rows["relu1"][-5:-2] == ["-", "-", "-"] and rows["relu1"][-1] == "-"  # no parameters, one algorithm
    assert rows["conv1"][-1] == rows["conv2"][-1] == "direct"  # 4 channels, one image: too small for Winograd
    shares = [float(r[-2].rstrip("%")) for r in rows.values()]
    assert abs(sum(shares) - 100) < 1 and max(shares) == float(rows["conv2"][-2].rstrip("%"))
    assert "9,431 trainable, 40 frozen" in text
    warning = [line for line in text.splitlines() if "NOT in the optimizer" in line]
    assert len(warning) == 1 and "fc2.weight, fc2.bias" in warning[0]
    assert "optimizer holds 2 parameter(s) that are not in this model" in text
    assert [line for line in text.splitlines() if line.startswith("note: frozen")][0].endswith("conv1.weight, conv1.bias")

    clean = transfer.summary(net)
    assert "WARNING" not in clean and "note" not in clean
    partly = transfer.summary(transfer.freeze(transfer_net(), "fc1.bias"))
    assert "partly" in partly
    bad = transfer.summary(net, input_shape=(1, 3, 28, 28))
    assert "WARNING: input_shape (1, 3, 28, 28) does not fit the model: layer 'conv1'" in bad
    assert "every parameter is frozen" in transfer.summary(transfer.freeze(transfer_net()))


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
    source, target = transfer_net(seed=1), transfer_net(seed=2)
    exported = transfer.to_torch_state_dict(source)
    assert list(exported) == TRANSFER_NET_PARAMS and all(a.flags.c_contiguous for a in exported.values())
    exported["fc1.weight"][0, 0] += 1  # a copy: the model is unaffected
    assert exported["fc1.weight"][0, 0] != source.fc1.weight.data[0, 0]
    report = transfer.from_torch_state_dict(target, {k: _FakeTensor(v) for k, v in source.state_dict().items()})
    assert report.ok and report.loaded == TRANSFER_NET_PARAMS
    x = random_images(6, seed=1)
    np.testing.assert_array_equal(eval_output(target, x), eval_output(source, x))
    with pytest.raises(ValueError, match="fc2.weight: model \\(3, 16\\) vs state dict \\(5, 16\\)"):
        transfer.from_torch_state_dict(transfer_net(num_classes=3), source.state_dict())


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
    assert report.ok and report.loaded == TRANSFER_NET_PARAMS
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

"""Tests of freezing (nnscratch.transfer.freeze, unfreeze, freeze_to, frozen_snapshot,
assert_frozen_unchanged): nothing changes a frozen parameter, and backward stops below the lowest
trainable layer.
"""
import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer

from strategies import params_copy, random_images, random_loader, transfer_net


# ---------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------


def test_freeze_by_name_list_parameter_and_all():
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer_net()
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
    net = transfer.freeze(transfer_net(), ["conv1", "fc1"])
    snapshot = transfer.frozen_snapshot(net)
    transfer.assert_frozen_unchanged(net, snapshot)
    net.conv1.bias.data[0] = np.nextafter(net.conv1.bias.data[0], np.float32(np.inf))  # one ulp
    net.fc1.weight.data[0, 0] += 1
    with pytest.raises(AssertionError) as info:
        transfer.assert_frozen_unchanged(net, snapshot)
    message = str(info.value)
    assert "conv1.bias" in message and "fc1.weight" in message
    assert "conv1.weight" not in message and "fc1.bias" not in message

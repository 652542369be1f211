"""Tests of Sequential: construction, names, indexing and slicing, replacing and appending layers, and
``backward(need_input_grad=False)`` stopping at the lowest layer that holds a trainable parameter.
"""
from collections import OrderedDict

import numpy as np
import pytest

from nnscratch import Conv2d, Dense, Flatten, LogSoftmax, Module, NLLLoss, ReLU, Sequential, models

from strategies import run_backward


def rng(seed=0):
    return np.random.default_rng(seed)


class Spy(Module):
    """Identity layer that records every forward/backward call."""

    def __init__(self):
        super().__init__()
        self.forward_calls = 0
        self.backward_calls = []

    def forward(self, x):
        self.forward_calls += 1
        return x

    def backward(self, grad_output, need_input_grad=True):
        self.backward_calls.append(need_input_grad)
        return grad_output if need_input_grad else None


def count_backward_calls(layer):
    """Wrap ``layer.backward`` (instance attribute) so that its calls are recorded."""
    calls = []
    original = layer.backward

    def backward(grad_output, need_input_grad=True):
        calls.append(need_input_grad)
        return original(grad_output, need_input_grad)

    layer.backward = backward
    return calls


# ----------------------------------------------------------------------------- Sequential

def test_sequential_default_names_and_construction_forms():
    a, b, c = Dense(4, 3), ReLU(), Dense(3, 2)
    s = Sequential(a, b, c)
    assert s.names() == ["0", "1", "2"] and len(s) == 3 and list(s) == [a, b, c]
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    s2 = Sequential([("fc", a), ("act", b)])
    assert s2.names() == ["fc", "act"] and s2.fc is a
    s3 = Sequential(OrderedDict(fc=a, act=b))
    assert s3.names() == ["fc", "act"]
    with pytest.raises(TypeError, match="Module"):
        Sequential(OrderedDict(fc=np.zeros(3)))


def test_sequential_indexing_by_int_name_and_slice():
    net = models.seed_net()
    assert net[0] is net.conv1 and net["conv1"] is net.conv1
    assert net[-1] is net.log_softmax and net[-2] is net.fc2
    assert net["fc2"] is net[10]
    assert net.index("fc1") == 7
    with pytest.raises(KeyError, match="nope"):
        net["nope"]
    with pytest.raises(IndexError):
        net[99]

    body = net[:"fc1"]
    assert isinstance(body, Sequential)
    assert body.names() == ["conv1", "relu1", "conv2", "relu2", "pool", "dropout1", "flatten"]
    assert body.conv1 is net.conv1  # layers are shared, not copied
    head = net["fc1":]
    assert head.names() == ["fc1", "relu3", "dropout2", "fc2", "log_softmax"]
    assert net["conv2":"pool"].names() == ["conv2", "relu2"]
    assert net[2:4].names() == ["conv2", "relu2"]
    assert net[::2].names() == ["conv1", "conv2", "pool", "flatten", "relu3", "fc2"]
    assert net[-2:].names() == ["fc2", "log_softmax"]
    # slices keep the parameter names of the original
    assert [n for n, _ in head.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    # body followed by head is the whole net
    net.eval()
    x = rng().standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(head(body(x)), net(x))
    with pytest.raises(KeyError):
        net[:"nope"]


def test_sequential_setitem_replaces_in_place():
    net = models.seed_net()
    names, parameter_names = net.names(), [n for n, _ in net.named_parameters()]
    new_fc2 = Dense(128, 3)
    net["fc2"] = new_fc2
    assert net.names() == names and net.fc2 is new_fc2 and net[10] is new_fc2
    new_conv = Conv2d(1, 32, 3)
    net[0] = new_conv
    assert net.names() == names and net.conv1 is new_conv and net["conv1"] is new_conv
    net[-1] = ReLU()
    assert net.names() == names and isinstance(net.log_softmax, ReLU)
    assert [n for n, _ in net.named_parameters()] == parameter_names
    assert net.state_dict()["fc2.weight"].shape == (3, 128)
    with pytest.raises(KeyError):
        net["nope"] = ReLU()
    with pytest.raises(TypeError):
        net["fc2"] = "not a module"
    net.eval()
    assert net(rng().standard_normal((2, 1, 28, 28)).astype(np.float32)).shape == (2, 3)


def test_sequential_append_and_duplicate_names():
    s = Sequential(OrderedDict(fc=Dense(4, 3)))
    assert s.append(ReLU(), "act") is s
    s.append(Dense(3, 2))
    assert s.names() == ["fc", "act", "2"]
    with pytest.raises(ValueError, match="'act'.*exists"):
        s.append(ReLU(), "act")
    with pytest.raises(ValueError, match="exists"):
        Sequential([("a", ReLU()), ("a", ReLU())])
    with pytest.raises(TypeError):
        s.append(lambda x: x, "f")
    assert s.names() == ["fc", "act", "2"]
    del s["act"]
    assert s.names() == ["fc", "2"]


@pytest.mark.parametrize("name", ["a.b", "", "append", "forward", "training", "_modules"])
def test_sequential_rejects_names_that_break_it(name):
    """A dotted name would make ambiguous parameter names ("a.b.weight"); a name that is already an
    attribute (a method, ``training``) would hide it (``Sequential(OrderedDict(append=ReLU()))`` used to
    fail with a confusing ``Module.__call__()`` TypeError, and a layer named ``training`` was replaced by
    a bool on ``eval()``)."""
    with pytest.raises(ValueError):
        Sequential(OrderedDict([(name, ReLU())]))
    with pytest.raises(TypeError, match="str"):
        Sequential().append(ReLU(), 3)


def make_spied_net():
    spy = Spy()
    net = Sequential(OrderedDict([
        ("spy", spy), ("conv1", Conv2d(1, 2, 3)), ("relu1", ReLU()), ("conv2", Conv2d(2, 2, 3)),
        ("relu2", ReLU()), ("flatten", Flatten(1)), ("fc", Dense(2 * 4 * 4, 3)), ("log_softmax", LogSoftmax(1)),
    ]))
    return net, spy


def test_backward_need_input_grad_false_stops_at_lowest_trainable_layer():
    x = rng().standard_normal((2, 1, 8, 8)).astype(np.float32)
    t = np.array([0, 2])

    # everything trainable: the input gradient flows through the spy
    net, spy = make_spied_net()
    grad_x = run_backward(net, x, t)
    assert spy.backward_calls == [True] and grad_x.shape == x.shape

    # need_input_grad=False: stops at conv1, the spy below it is never called
    net, spy = make_spied_net()
    conv1_calls = count_backward_calls(net.conv1)
    criterion = NLLLoss()
    criterion(net(x), t)
    assert net.backward(criterion.backward(), need_input_grad=False) is None
    assert spy.forward_calls == 1 and spy.backward_calls == []
    assert conv1_calls == [False]  # conv1 is asked for weight gradients only
    assert all(p.grad is not None for p in net.parameters())

    # conv1 frozen: the lowest trainable layer is conv2; conv1 and the spy are not called
    net, spy = make_spied_net()
    net.conv1.requires_grad_(False)
    conv1_calls = count_backward_calls(net.conv1)
    relu1_calls = count_backward_calls(net.relu1)
    conv2_calls = count_backward_calls(net.conv2)
    criterion(net(x), t)
    assert net.backward(criterion.backward(), need_input_grad=False) is None
    assert conv1_calls == [] and relu1_calls == [] and spy.backward_calls == []
    assert conv2_calls == [False]
    assert net.conv1.weight.grad is None and net.conv1.bias.grad is None
    assert net.conv2.weight.grad is not None and net.fc.weight.grad is not None

    # the gradients are the same as with a full backward
    full, _ = make_spied_net()
    full.load_state_dict(net.state_dict())
    full.conv1.requires_grad_(False)
    run_backward(full, x, t)
    for (name, p), q in zip(net.named_parameters(), full.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-6, atol=1e-7, err_msg=name)

    # nothing trainable at all: nothing is called
    net, spy = make_spied_net()
    net.requires_grad_(False)
    fc_calls = count_backward_calls(net.fc)
    criterion(net(x), t)
    assert net.backward(criterion.backward(), need_input_grad=False) is None
    assert fc_calls == [] and spy.backward_calls == []


def test_nested_sequential_backward_need_input_grad_false():
    spy = Spy()
    inner = Sequential(OrderedDict(spy=spy, fc=Dense(4, 4)))
    outer = Sequential(OrderedDict(body=inner, act=ReLU(), head=Dense(4, 2)))
    x = rng().standard_normal((3, 4)).astype(np.float32)
    outer(x)
    assert outer.backward(np.ones((3, 2), dtype=np.float32), need_input_grad=False) is None
    assert spy.backward_calls == []
    assert inner.fc.weight.grad is not None

"""Tests of the Module / Parameter / Sequential API and of initialization and Dropout.

Everything here is NumPy only and runs in well under a second per test.
"""
import math
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch
from nnscratch import (
    Conv2d, CrossEntropyLoss, Dense, Dropout, Flatten, LogSoftmax, MaxPool2d, Module, NLLLoss, Parameter, ReLU,
    Sequential, models,
)

SEED_NET_SHAPES = OrderedDict([
    ("conv1.weight", (32, 1, 3, 3)), ("conv1.bias", (32,)),
    ("conv2.weight", (64, 32, 3, 3)), ("conv2.bias", (64,)),
    ("fc1.weight", (128, 9216)), ("fc1.bias", (128,)),
    ("fc2.weight", (10, 128)), ("fc2.bias", (10,)),
])


def rng(seed=0):
    return np.random.default_rng(seed)


def small_net(dtype=np.float32):
    """conv1 -> relu -> pool -> flatten -> fc -> log_softmax on (N, 1, 6, 6) inputs."""
    return Sequential(OrderedDict([
        ("conv1", Conv2d(1, 2, 3, dtype=dtype)), ("relu1", ReLU()), ("pool", MaxPool2d(2)),
        ("flatten", Flatten(1)), ("fc", Dense(2 * 2 * 2, 3, dtype=dtype)), ("log_softmax", LogSoftmax(1)),
    ]))


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


# ----------------------------------------------------------------------------- registration

class TwoLayer(Module):
    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.ones(3, dtype=np.float32))
        self.first = Dense(4, 3)
        self.second = Sequential(ReLU(), Dense(3, 2))
        self.not_a_param = np.zeros(3)  # plain arrays are not registered
        self.label = "hello"

    def forward(self, x):
        return self.second(self.first(x) * self.scale.data)


def test_attribute_registration():
    m = TwoLayer()
    assert list(m._parameters) == ["scale"]
    assert list(m._modules) == ["first", "second"]
    assert [name for name, _ in m.named_parameters()] == [
        "scale", "first.weight", "first.bias", "second.1.weight", "second.1.bias",
    ]
    assert [name for name, _ in m.named_modules()] == ["", "first", "second", "second.0", "second.1"]
    assert [name for name, _ in m.named_children()] == ["first", "second"]
    assert len(list(m.parameters())) == 5
    # re-assigning a non-module value under a registered name unregisters it
    m.first = None
    assert "first" not in m._modules
    assert [name for name, _ in m.named_parameters()] == ["scale", "second.1.weight", "second.1.bias"]
    del m.scale
    assert "scale" not in m._parameters and not hasattr(m, "scale")


def test_setattr_before_super_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self):
            self.weight = Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Broken()


def test_reassigning_a_registered_attribute_keeps_its_position():
    """PyTorch semantics: ``self.weight = Parameter(...)`` / ``net.conv1 = Conv2d(...)`` replaces the
    entry in place; the parameter order (hence state_dict order) and the Sequential's layer order
    must not change."""
    layer = Dense(4, 3)
    layer.weight = Parameter(np.zeros((3, 4), dtype=np.float32))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]

    net = small_net()
    net.conv1 = Conv2d(1, 2, 3)
    assert net.names() == ["conv1", "relu1", "pool", "flatten", "fc", "log_softmax"]
    assert net[0] is net.conv1
    assert net(rng().standard_normal((2, 1, 6, 6)).astype(np.float32)).shape == (2, 3)


def test_parameter_basics():
    p = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert p.shape == (2, 3) and p.dtype == np.float32 and p.size == 6
    assert p.grad is None and p.requires_grad
    assert "requires_grad=False" in repr(Parameter(np.zeros(1), requires_grad=False))
    p.accumulate_grad(np.ones((2, 3)))
    first = p.grad
    p.accumulate_grad(np.ones((2, 3)))
    assert p.grad.dtype == np.float32
    np.testing.assert_array_equal(p.grad, 2 * np.ones((2, 3)))
    assert first is p.grad  # accumulated in place
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        p.accumulate_grad(np.ones((3, 2)))


def test_accumulate_grad_copies_the_first_gradient():
    p = Parameter(np.zeros(3))
    g = np.ones(3)
    p.accumulate_grad(g)
    p.accumulate_grad(g)
    np.testing.assert_array_equal(g, np.ones(3))  # the caller's array is untouched


def test_accumulate_grad_takes_a_handed_over_gradient_without_copying():
    p = Parameter(np.zeros(3, dtype=np.float32))
    g = np.ones(3, dtype=np.float32)
    p.accumulate_grad(g, copy=False)
    assert p.grad is g
    q = Parameter(np.zeros(3, dtype=np.float32))
    q.accumulate_grad(np.ones(3), copy=False)  # another dtype: converted (a copy is unavoidable)
    assert q.grad.dtype == np.float32


def test_seed_net_named_parameters():
    net = models.seed_net()
    shapes = OrderedDict((name, p.shape) for name, p in net.named_parameters())
    assert shapes == SEED_NET_SHAPES
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert list(net.state_dict()) == list(SEED_NET_SHAPES)
    assert net.names() == ["conv1", "relu1", "conv2", "relu2", "pool", "dropout1", "flatten",
                           "fc1", "relu3", "dropout2", "fc2", "log_softmax"]
    assert [name for name, _ in models.seed_net(log_softmax=False).named_parameters()] == list(SEED_NET_SHAPES)
    assert models.seed_net(num_classes=5).fc2.weight.shape == (5, 128)


# ----------------------------------------------------------------------------- state dicts

def test_state_dict_round_trip():
    nnscratch.manual_seed(1)
    a = models.seed_net()
    nnscratch.manual_seed(2)
    b = models.seed_net()
    x = rng().standard_normal((2, 1, 28, 28)).astype(np.float32)
    a.eval(), b.eval()
    assert not np.allclose(a(x), b(x))

    state = a.state_dict()
    assert list(state) == list(SEED_NET_SHAPES)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    # copies: mutating the model afterwards does not change the saved state
    saved = state["conv1.weight"].copy()
    original = a.conv1.weight.data.copy()
    a.conv1.weight.data[:] = 7
    np.testing.assert_array_equal(state["conv1.weight"], saved)
    a.conv1.weight.data[:] = original

    missing, unexpected = b.load_state_dict(state)
    assert missing == [] and unexpected == []
    for name, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
        assert value.dtype == np.float32
    np.testing.assert_array_equal(a(x), b(x))
    # ... and loading copies: mutating the dict does not reach the model
    state["fc2.bias"][:] = 123
    assert not np.any(b.fc2.bias.data == 123)


def test_load_state_dict_keeps_the_model_dtype():
    net = small_net()
    state = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in net.parameters())


def test_load_state_dict_strict_and_non_strict():
    net = small_net()
    state = net.state_dict()
    original = {k: v.copy() for k, v in state.items()}
    partial = OrderedDict(state)
    del partial["fc.bias"]
    partial["extra.weight"] = np.zeros(3, dtype=np.float32)
    partial["conv1.weight"] = np.full_like(partial["conv1.weight"], 0.5)

    with pytest.raises(ValueError) as info:
        net.load_state_dict(partial)
    message = str(info.value)
    assert "fc.bias" in message and "extra.weight" in message
    assert "missing" in message and "unexpected" in message
    # a failed strict load changes nothing
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(value, original[name])

    missing, unexpected = net.load_state_dict(partial, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["extra.weight"]
    np.testing.assert_array_equal(net.conv1.weight.data, 0.5)
    np.testing.assert_array_equal(net.fc.bias.data, original["fc.bias"])  # missing: left as it was


def test_load_state_dict_shape_mismatch_lists_every_key_with_both_shapes():
    net = models.seed_net()
    state = net.state_dict()
    state["conv1.weight"] = np.zeros((16, 1, 3, 3), dtype=np.float32)
    state["fc1.weight"] = np.zeros((128, 1600), dtype=np.float32)
    state["fc2.bias"] = np.zeros((5,), dtype=np.float32)
    for strict in (True, False):
        with pytest.raises(ValueError) as info:
            net.load_state_dict(state, strict=strict)
        message = str(info.value)
        for key, model_shape, given_shape in [
            ("conv1.weight", (32, 1, 3, 3), (16, 1, 3, 3)),
            ("fc1.weight", (128, 9216), (128, 1600)),
            ("fc2.bias", (10,), (5,)),
        ]:
            assert key in message
            assert str(model_shape) in message and str(given_shape) in message
        for key in ("conv1.bias", "conv2.weight", "fc2.weight"):
            assert key not in message
    # nothing was loaded
    assert net.conv1.weight.shape == (32, 1, 3, 3)
    assert not np.all(net.conv1.weight.data == 0)


# ----------------------------------------------------------------------------- modes

def test_train_eval_propagate_to_every_submodule():
    net = models.seed_net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not net.dropout1.training and not net.dropout2.training
    # a nested container is reached too
    outer = Sequential(OrderedDict(body=Sequential(Dropout(0.5)), head=ReLU()))
    outer.eval()
    assert not outer.body[0].training


def test_dropout_is_identity_in_eval_and_active_in_train():
    net = models.seed_net()
    x = rng().standard_normal((4, 1, 28, 28)).astype(np.float32)
    net.eval()
    y1, y2 = net(x), net(x)
    np.testing.assert_array_equal(y1, y2)
    d = Dropout(0.5).eval()
    h = rng().standard_normal((10, 10)).astype(np.float32)
    np.testing.assert_array_equal(d(h), h)
    with nnscratch.enable_grad():  # an eval-mode forward keeps nothing otherwise
        np.testing.assert_array_equal(d(h), h)
    np.testing.assert_array_equal(d.backward(h), h)
    net.train()
    assert not np.array_equal(net(x), net(x))


# ----------------------------------------------------------------------------- dtypes

def test_to_float64_and_double():
    net = small_net()
    w = net.conv1.weight.data.copy()
    x = rng().standard_normal((2, 1, 6, 6))
    net(x)
    NLLLoss()(net(x), np.array([0, 2]))
    net.backward(np.ones((2, 3)))
    assert net.to(np.float64) is net
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    np.testing.assert_array_equal(net.conv1.weight.data, w.astype(np.float64))
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net(x).dtype == np.float64


def test_float64_input_with_float32_parameters_runs_in_float64():
    net = models.seed_net().eval()
    x64 = rng(3).standard_normal((2, 1, 28, 28))
    with nnscratch.enable_grad():  # backward follows an eval-mode forward
        y = net(x64)
    assert y.dtype == np.float64
    criterion = NLLLoss()
    criterion(y, np.array([1, 7]))
    grad_x = net.backward(criterion.backward())
    assert grad_x.dtype == np.float64 and grad_x.shape == x64.shape
    for p in net.parameters():  # parameter gradients live in the parameter's dtype
        assert p.grad.dtype == np.float32 and p.grad.shape == p.shape
    # the float64 pass agrees with a float64 copy of the net, to float64 precision
    twin = models.seed_net().eval()
    twin.load_state_dict(net.state_dict())
    twin.double()
    np.testing.assert_allclose(y, twin(x64), rtol=1e-12, atol=1e-12)
    # and is more precise than the float32 pass
    y32 = net(x64.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- gradients

def run_backward(net, x, target):
    criterion = NLLLoss()
    criterion(net(x), target)
    return net.backward(criterion.backward())


def test_requires_grad_false_stops_parameter_grads():
    net = small_net()
    x = rng().standard_normal((4, 1, 6, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 0])
    assert net.conv1.requires_grad_(False) is net.conv1
    assert not net.conv1.weight.requires_grad and not net.conv1.bias.requires_grad
    grad_x = run_backward(net, x, t)
    assert grad_x is not None and grad_x.shape == x.shape  # the input gradient still flows
    assert net.conv1.weight.grad is None and net.conv1.bias.grad is None
    assert net.fc.weight.grad is not None and net.fc.bias.grad is not None
    assert not net.conv1.has_trainable_parameters() and net.has_trainable_parameters()
    net.requires_grad_(False)
    net.zero_grad()
    run_backward(net, x, t)
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_()
    run_backward(net, x, t)
    assert all(p.grad is not None for p in net.parameters())


def test_zero_grad_sets_grads_to_none():
    net = small_net()
    run_backward(net, rng().standard_normal((2, 1, 6, 6)).astype(np.float32), np.array([0, 1]))
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_gradients_accumulate_over_two_backward_calls():
    net = small_net(np.float64)
    x = rng().standard_normal((3, 1, 6, 6))
    t = np.array([2, 0, 1])
    run_backward(net, x, t)
    once = {name: p.grad.copy() for name, p in net.named_parameters()}
    run_backward(net, x, t)  # forward + backward again, no zero_grad
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-14, atol=0)
    # backward twice after a single forward accumulates too
    net.zero_grad()
    criterion = NLLLoss()
    criterion(net(x), t)
    g = criterion.backward()
    net.backward(g)
    net.backward(g)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * once[name], rtol=1e-14, atol=0)


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="before forward"):
        Conv2d(1, 2, 3).backward(np.zeros((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="before forward"):
        Dense(3, 2).backward(np.zeros((1, 2), dtype=np.float32))


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
    names = net.names()
    new_fc2 = Dense(128, 3)
    net["fc2"] = new_fc2
    assert net.names() == names and net.fc2 is new_fc2 and net[10] is new_fc2
    new_conv = Conv2d(1, 32, 3)
    net[0] = new_conv
    assert net.names() == names and net.conv1 is new_conv and net["conv1"] is new_conv
    net[-1] = ReLU()
    assert net.names() == names and isinstance(net.log_softmax, ReLU)
    assert [n for n, _ in net.named_parameters()] == list(SEED_NET_SHAPES)
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


# ----------------------------------------------------------------------------- initialization

@pytest.mark.parametrize("name, fan_in", [("conv1", 9), ("conv2", 32 * 9), ("fc1", 9216), ("fc2", 128)])
def test_kaiming_uniform_bounds_and_statistics(name, fan_in):
    nnscratch.manual_seed(0)
    layer = getattr(models.seed_net(), name)
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a=√5): √(2/(1+5))·√(3/fan_in) = 1/√fan_in
    for param in (layer.weight, layer.bias):
        values = param.data
        # float32 rounding is monotonic, so |v| <= bound in float64 implies |v32| <= float32(bound)
        assert np.abs(values).max() <= np.float32(bound)
    w = layer.weight.data.astype(np.float64)
    if w.size >= 1000:
        # U(-b, b): mean 0, standard deviation b/√3, and it fills the interval
        n = w.size
        assert abs(w.mean()) < 5 * bound / math.sqrt(3 * n)
        assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        assert np.abs(w).max() > 0.98 * bound
        assert w.min() < 0 < w.max()


def test_bias_uses_the_layer_fan_in():
    nnscratch.manual_seed(0)
    conv = Conv2d(4, 512, 5)  # fan_in 100 -> bound 0.1
    dense = Dense(16, 2000)  # fan_in 16 -> bound 0.25
    assert np.abs(conv.bias.data).max() <= np.float32(0.1)
    assert np.abs(conv.bias.data).max() > 0.09
    assert np.abs(dense.bias.data).max() <= np.float32(0.25)
    assert np.abs(dense.bias.data).max() > 0.24


def test_manual_seed_makes_networks_identical():
    nnscratch.manual_seed(0)
    a = models.seed_net()
    nnscratch.manual_seed(0)
    b = models.seed_net()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    nnscratch.manual_seed(1)
    c = models.seed_net()
    assert not np.array_equal(a.conv1.weight.data, c.conv1.weight.data)
    # a layer given its own generator ignores the global one
    d1 = Dense(5, 4, generator=np.random.default_rng(7))
    nnscratch.manual_seed(123)
    d2 = Dense(5, 4, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(d1.weight.data, d2.weight.data)
    assert Dense(5, 4, dtype=np.float64).weight.dtype == np.float64


# ----------------------------------------------------------------------------- Dropout

@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_inverted_scaling(p):
    d = Dropout(p)
    d.manual_seed(0)
    x = rng().uniform(0.5, 1.5, size=(200, 500)).astype(np.float32)
    y = d(x)
    kept = y != 0
    assert kept.mean() == pytest.approx(1 - p, abs=0.01)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert y.mean() == pytest.approx(x.mean(), rel=0.02)  # expectation preserved
    # the backward pass applies the same mask and scale
    g = rng(1).standard_normal(x.shape).astype(np.float32)
    gx = d.backward(g)
    np.testing.assert_array_equal(gx == 0, ~kept | (g == 0))
    np.testing.assert_allclose(gx[kept], g[kept] / (1 - p), rtol=1e-6)
    assert y.dtype == np.float32 and d(x.astype(np.float64)).dtype == np.float64


def test_dropout_p_zero_is_identity():
    x = rng().standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(Dropout(0.0)(x), x)


def test_dropout_is_reproducible():
    x = np.ones((16, 32), dtype=np.float32)
    nnscratch.manual_seed(5)
    a = Dropout(0.5)(x)
    nnscratch.manual_seed(5)
    b = Dropout(0.5)(x)
    np.testing.assert_array_equal(a, b)
    d = Dropout(0.5)
    d.manual_seed(9)
    c = d(x)
    d.manual_seed(9)
    np.testing.assert_array_equal(d(x), c)
    assert not np.array_equal(d(x), c)  # the next mask is a fresh draw
    e = Dropout(0.5, generator=np.random.default_rng(9))
    np.testing.assert_array_equal(e(x), c)
    # two seeded full-network training passes agree
    net = models.seed_net()
    xi = rng().standard_normal((2, 1, 28, 28)).astype(np.float32)
    nnscratch.manual_seed(3)
    y1 = net(xi)
    nnscratch.manual_seed(3)
    np.testing.assert_array_equal(net(xi), y1)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_p_validation(p):
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(p)


def test_losses_validate_reduction_and_labels():
    with pytest.raises(ValueError, match="reduction"):
        NLLLoss(reduction="none")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.0, 1.0]))

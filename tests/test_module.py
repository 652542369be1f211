"""Tests of the Module / Parameter API: registration, state dicts, modes, dtypes, gradients
(Sequential, initialization and Dropout have their own files: test_sequential.py, test_init_dropout.py).

Everything here is NumPy only and runs in well under a second per test.
"""
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch
from nnscratch import (
    Conv2d, CrossEntropyLoss, Dense, Dropout, Flatten, LogSoftmax, MaxPool2d, Module, NLLLoss, Parameter, ReLU,
    Sequential, models,
)

from strategies import run_backward

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


def test_losses_validate_reduction_and_labels():
    with pytest.raises(ValueError, match="reduction"):
        NLLLoss(reduction="none")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.0, 1.0]))

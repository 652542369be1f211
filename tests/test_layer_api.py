"""A layer owns its knowledge: its constructor arguments, the shapes of the parameters it would hold,
its output shape and its FLOPs (``constructor_args``, ``parameter_shapes``, ``output_shape``,
``flops``), and it joins the registry that ``load_model`` builds from (``register_layer``).

Every built-in layer is checked against the truth: a layer rebuilt from its constructor arguments
equals it, the parameter shapes it announces are those it builds, the output shape it computes is
the shape its forward returns (and the window layers' is :func:`reference.output_size`), and the
convolution's and dense layer's FLOPs are the multiply-adds of their formulas.
"""
import math
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import reference
from nnscratch.nn import LAYER_CLASSES, register_layer

# one instance of every built-in layer class with arguments off their defaults, and an input it fits
LAYERS = [
    (nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), bias=False, dtype=np.float64), (2, 3, 9, 8)),
    (nn.Conv2d(1, 4, 5), (1, 1, 12, 12)),
    (nn.Conv2d(2, 3, 3, padding=1, algorithm="winograd_2x2"), (2, 2, 6, 7)),
    (nn.Dense(7, 3, dtype=np.float64), (4, 7)),
    (nn.Dense(7, 3, bias=False), (4, 7)),
    (nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 10)),
    (nn.AvgPool2d((2, 3), stride=(1, 2)), (1, 2, 6, 7)),
    (nn.Dropout(0.25), (3, 5)),
    (nn.Flatten(2), (2, 3, 4, 5)),
    (nn.LogSoftmax(0), (3, 4)),
    (nn.Softmax(-1), (2, 6)),
    (nn.ReLU(), (2, 3, 4)),
]


def ids(cases):
    return [repr(layer) for layer, _ in cases]


def test_every_registered_layer_is_tested_here():
    tested = {type(layer) for layer, _ in LAYERS} | {nn.Sequential}
    assert {cls for cls in LAYER_CLASSES.values() if cls.__module__.startswith("nnscratch.")} == tested
    assert LAYER_CLASSES["Linear"] is nn.Dense and LAYER_CLASSES["Dense"] is nn.Dense


@pytest.mark.parametrize("layer, input_shape", LAYERS, ids=ids(LAYERS))
def test_a_layer_rebuilt_from_its_constructor_args_equals_it(layer, input_shape):
    args = layer.constructor_args()
    twin = type(layer)(**args)
    assert twin.constructor_args() == args and repr(twin) == repr(layer)
    assert [(n, p.shape, p.dtype) for n, p in twin.named_parameters()] == \
        [(n, p.shape, p.dtype) for n, p in layer.named_parameters()]
    announced = type(layer).parameter_shapes(**args)
    if announced is not None:  # the layers that hold parameters announce them without being built
        assert announced == {name: p.shape for name, p in layer.named_parameters()}


@pytest.mark.parametrize("layer, input_shape", LAYERS, ids=ids(LAYERS))
def test_output_shape_is_the_forward_output_shape(layer, input_shape):
    dtype = next((p.dtype for p in layer.parameters()), np.float32)
    x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
    with nn.inference():
        assert layer.output_shape(input_shape) == layer(x).shape
    assert isinstance(layer.flops(input_shape), int) and layer.flops(input_shape) >= 0


def test_window_layers_output_size_is_the_reference_formula():
    for h, k, s, p in [(28, 3, 1, 0), (28, 3, 1, 1), (9, 3, 2, 1), (7, 7, 3, 0), (10, 4, 3, 2)]:
        expected = reference.output_size(h, k, s, p)
        assert nn.Conv2d(1, 1, k, stride=s, padding=p).output_shape((1, 1, h, h))[2:] == (expected, expected)
        if 2 * p <= k:
            assert nn.MaxPool2d(k, stride=s, padding=p).output_shape((1, 1, h, h))[2:] == (expected, expected)


def test_flops_of_convolution_and_dense_are_their_multiply_adds():
    conv = nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0))
    n, f, oh, ow = conv.output_shape((2, 3, 9, 8))
    assert conv.flops((2, 3, 9, 8)) == 2 * (n * f * oh * ow) * (3 * 3 * 2) + n * f * oh * ow
    assert nn.Dense(7, 3, bias=False).flops((4, 7)) == 2 * 4 * 7 * 3
    assert nn.MaxPool2d(2).flops((1, 3, 8, 8)) == 3 * 4 * 4 * 4
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2 * 4 * 4, 3))
    assert net.output_shape((5, 1, 6, 6)) == (5, 3)
    assert net.flops((5, 1, 6, 6)) == sum(
        layer.flops(shape) for layer, shape in zip(net, [(5, 1, 6, 6), (5, 2, 4, 4), (5, 2, 4, 4), (5, 32)]))


class Doubler(nn.Module):
    """A user-defined layer that says nothing about itself: y = 2x."""

    def forward(self, x):
        return 2 * x

    def backward(self, grad_output, need_input_grad=True):
        return 2 * grad_output if need_input_grad else None


def test_the_defaults_for_a_layer_that_does_not_say():
    layer = Doubler()
    assert layer.constructor_args() is None and Doubler.parameter_shapes() is None
    assert layer.flops((2, 3)) is None
    assert layer.output_shape((2, 3, 5)) == (2, 3, 5)  # found by running it once on zeros
    assert nn.Sequential(nn.ReLU(), Doubler()).flops((2, 3)) is None  # unknown if a child does not say


def test_output_shape_names_the_layer_when_the_input_does_not_fit():
    for layer, shape, message in [
        (nn.Conv2d(1, 4, 3), (1, 3, 28, 28), r"Conv2d\(1, 4, kernel_size=\(3, 3\)\): expects an input \(N, 1, H, W\)"),
        (nn.Conv2d(1, 4, 5), (1, 1, 3, 3), "larger than the padded input"),
        (nn.Dense(8, 2), (1, 9), r"Dense\(8, 2\): expects an input \(N, 8\)"),
        (nn.MaxPool2d(2), (1, 4, 4), r"expects an input \(N, C, H, W\)"),
        (nn.Flatten(3), (2, 3, 4), "has no axis 3"),
        (nn.Softmax(2), (2, 3), "dim 2 is out of range"),
    ]:
        with pytest.raises(ValueError, match=message):
            layer.output_shape(shape)


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.Conv2d(1, 2, 3, dtype=np.int64), ValueError, "dtype must be float32 or float64, got int64"),
    (lambda: nn.Dense(2, 2, dtype="object"), ValueError, "dtype must be float32 or float64, got object"),
    (lambda: nn.Dense(2, 2, dtype={"names": ["a"]}), TypeError, "dtype must be float32 or float64"),
    (lambda: nn.Dense(2, 2, dtype="no such type"), TypeError, "dtype must be float32 or float64"),
    (lambda: nn.Conv2d(1, 2, 3, bias="yes"), TypeError, r"Conv2d\(1, 2, kernel_size=3\): bias must be True or False"),
    (lambda: nn.Dense(2, 2, bias=1), TypeError, "bias must be True or False"),
    (lambda: nn.Flatten("1"), TypeError, "start_dim must be an int"),
    (lambda: nn.LogSoftmax(1.0), TypeError, r"LogSoftmax\(dim=1.0\): dim must be an int"),
    (lambda: nn.Dense(2, True), ValueError, "out_features must be a positive int"),
])
def test_layers_check_the_arguments_a_weight_file_could_give_them(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_arguments_are_accepted():
    layer = nn.Conv2d(np.int64(1), np.int32(2), np.int64(3), bias=np.bool_(False), dtype=np.dtype("float64"))
    assert layer.constructor_args() == {"in_channels": 1, "out_channels": 2, "kernel_size": (3, 3), "stride": (1, 1),
                                        "padding": (0, 0), "bias": False, "dtype": np.float64, "algorithm": "auto"}
    assert nn.Flatten(np.int64(2)).start_dim == 2 and type(nn.Flatten(np.int64(2)).start_dim) is int


def test_register_layer_joins_the_registry_and_refuses_what_it_cannot_rebuild():
    Scale = type("Scale", (nn.Module,), {"constructor_args": lambda self: {}})  # the least a registered layer has

    try:
        assert register_layer(Scale) is Scale and LAYER_CLASSES["Scale"] is Scale
        assert register_layer(Scale) is Scale  # again (a notebook cell run twice): replaced
        with pytest.raises(TypeError, match="must define constructor_args"):
            register_layer(Doubler)
        with pytest.raises(TypeError, match="expected a Module subclass"):
            register_layer(dict)
        with pytest.raises(ValueError, match="the name 'Conv2d' is taken by nnscratch.nn.conv.Conv2d"):
            register_layer(type("Conv2d", (Scale,), {}))
        with pytest.raises(ValueError, match="'Linear' is taken"):
            register_layer(aliases=("Linear",))(type("Other", (Scale,), {}))
        assert "Other" not in LAYER_CLASSES  # a refused registration registers nothing
    finally:
        LAYER_CLASSES.pop("Scale", None)


def test_load_state_dict_policies_are_those_of_the_one_loader():
    net = nn.Sequential(OrderedDict(fc=nn.Dense(3, 2)))
    report = nn.nn.load_arrays(net, {"fc.weight": np.ones((2, 3)), "extra": np.zeros(1)}, strict=False)
    assert report.loaded == ["fc.weight"] and report.missing == ["fc.bias"] and report.unexpected == ["extra"]
    np.testing.assert_array_equal(net.fc.weight.data, 1)
    assert net.fc.weight.dtype == np.float32 and net.fc.weight.data.flags.c_contiguous
    before = net.fc.weight.data.copy()
    report = nn.nn.load_arrays(net, {"fc.weight": np.zeros((3, 2))}, strict=False, check_only=True)
    assert report.mismatched == [("fc.weight", (2, 3), (3, 2))]
    np.testing.assert_array_equal(net.fc.weight.data, before)
    with pytest.raises(ValueError, match=r"shape mismatch: fc.weight: model \(2, 3\) vs state dict \(3, 2\)"):
        net.load_state_dict({"fc.weight": np.zeros((3, 2))}, strict=False)  # PyTorch's policy: shapes must match
    with pytest.raises(ValueError, match="mismatched must be 'report' or 'raise'"):
        nn.nn.load_arrays(net, {}, mismatched="ignore")
    assert math.isclose(float(net.fc.weight.data.sum()), 6.0)

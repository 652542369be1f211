"""Gradient checks: every layer's analytic backward against float64 centered differences.

Each check runs on both backends (the ``backend`` fixture of ``conftest.py``) with a
tolerance of 1e-6 on the relative error of :func:`nnscratch.gradient_check.relative_error`;
every error is recorded so the session summary can list the largest ones.

Finite differences are only valid where the function is differentiable, so:

* max-pooling inputs are a scaled random permutation (no ties, gaps of 0.1 >> eps);
* ReLU inputs are kept at least 0.1 away from the kink at 0.
"""
import numpy as np
import pytest

import nnscratch as nn
from nnscratch import ops
from nnscratch.gradient_check import GradcheckError, check_loss, check_module, gradcheck, relative_error

from strategies import num_threads

TOL = 1e-6


@pytest.fixture(autouse=True)
def one_kernel_thread():
    """Finite differences call the kernels thousands of times on tiny arrays, where OpenMP only
    costs time (and a lot of it when other processes compete for the cores: a 2-thread parallel
    region then waits for a descheduled thread on every call). The checks run single-threaded;
    test_two_threads repeats a few with 2 threads, and test_kernels_equal.py compares the
    multi-threaded kernels with the reference."""
    with num_threads(1):
        yield


@pytest.fixture
def check(request, record_errors):
    """``check(module, x, **kwargs)``: run :func:`check_module`, record the errors, assert all <= TOL.

    Also asserts that every trainable parameter (and the input) was checked."""

    def run(module, x, tol=TOL, label="", **kwargs):
        expected = {"input"} | {name for name, p in module.named_parameters() if p.requires_grad}
        errors = check_module(module, x, **kwargs)
        record_errors(request.node.name + label, errors)
        assert set(errors) == expected, f"checked {sorted(errors)}, expected {sorted(expected)}"
        bad = {name: e for name, e in errors.items() if not e <= tol}
        assert not bad, f"{module._where()}: relative errors above {tol}: {bad} (all: {errors})"
        return errors

    return run


def no_ties(shape, rng, spacing=0.1):
    """Distinct values, at least ``spacing`` apart, in random order: max-pooling has no ties."""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) * spacing


def away_from_zero(shape, rng, margin=0.1):
    """Standard-normal values pushed at least ``margin`` away from 0 (ReLU's kink)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


# ----------------------------------------------------------------------------- convolution

# (in_channels, out_channels, kernel, stride, padding, bias, H, W)
CONV_CASES = [
    pytest.param(1, 1, 3, 1, 0, True, 5, 5, id="1to1_k3_s1_p0"),
    pytest.param(2, 3, 3, 1, 1, True, 5, 6, id="2to3_k3_s1_p1"),
    pytest.param(3, 2, 3, 2, 1, False, 6, 5, id="3to2_k3_s2_p1_nobias"),
    pytest.param(2, 2, 3, 1, 2, True, 4, 4, id="2to2_k3_s1_p2"),
    pytest.param(2, 2, 3, 2, 2, True, 5, 5, id="2to2_k3_s2_p2"),
    pytest.param(2, 2, (2, 3), 1, 2, True, 4, 5, id="2to2_k2x3_s1_p2"),
    pytest.param(2, 3, (3, 2), 2, 0, True, 7, 6, id="2to3_k3x2_s2_p0"),
    pytest.param(2, 2, (2, 3), 2, 1, False, 5, 6, id="2to2_k2x3_s2_p1_nobias"),
    pytest.param(3, 4, 1, 1, 0, True, 4, 4, id="3to4_k1_s1_p0"),
    pytest.param(2, 2, 1, 2, 1, False, 5, 5, id="2to2_k1_s2_p1_nobias"),
    pytest.param(2, 3, 3, (2, 1), (1, 0), True, 6, 5, id="2to3_k3_s2x1_p1x0"),
    pytest.param(1, 2, (2, 3), (1, 2), (0, 1), True, 5, 6, id="1to2_k2x3_s1x2_p0x1"),
    pytest.param(1, 2, 2, 2, 0, True, 5, 5, id="1to2_k2_s2_lastrow_unused"),
    pytest.param(2, 2, 3, 3, (2, 1), True, 5, 5, id="2to2_k3_s3_p2x1"),
    pytest.param(2, 1, (3, 3), 1, 0, True, 3, 3, id="2to1_kernel_equals_input"),
]


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, bias, h, w", CONV_CASES)
def test_conv2d(backend, check, cin, cout, kernel, stride, padding, bias, h, w):
    rng = np.random.default_rng(1)
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias,
                      dtype=np.float64, generator=rng)
    if bias:  # a non-trivial bias (the default init may be tiny)
        layer.bias.data[:] = rng.standard_normal(cout)
    check(layer, rng.standard_normal((2, cin, h, w)))


def test_conv2d_batch_of_one_float32_layer_converted(backend, check):
    """A float32 layer is converted to float64 by the check and still passes."""
    rng = np.random.default_rng(2)
    layer = nn.Conv2d(2, 2, 3, padding=1, generator=rng)  # float32
    check(layer, rng.standard_normal((1, 2, 4, 4)))
    assert layer.weight.dtype == np.float64


# ----------------------------------------------------------------------------- pooling

# (kernel, stride, padding, H, W)
POOL_CASES = [
    pytest.param(2, None, 0, 4, 4, id="k2_nonoverlapping"),
    pytest.param(2, 2, 0, 5, 5, id="k2_s2_lastrow_unused"),
    pytest.param(3, 2, 0, 7, 7, id="k3_s2_overlapping"),
    pytest.param(3, 1, 0, 5, 5, id="k3_s1_overlapping"),
    pytest.param(3, 2, 1, 6, 6, id="k3_s2_p1"),
    pytest.param(2, 1, 1, 4, 5, id="k2_s1_p1"),
    pytest.param((2, 3), None, 0, 4, 6, id="k2x3_nonoverlapping"),
    pytest.param((2, 3), (1, 2), (1, 1), 5, 5, id="k2x3_s1x2_p1"),
    pytest.param((3, 2), (2, 1), (1, 0), 5, 4, id="k3x2_s2x1_p1x0"),
    pytest.param(3, 3, 1, 5, 5, id="k3_s3_p1"),
    pytest.param(4, 2, 2, 5, 6, id="k4_s2_p2"),
]


@pytest.mark.parametrize("kernel, stride, padding, h, w", POOL_CASES)
def test_maxpool2d(backend, check, kernel, stride, padding, h, w):
    rng = np.random.default_rng(3)
    layer = nn.MaxPool2d(kernel, stride=stride, padding=padding)
    check(layer, no_ties((2, 2, h, w), rng))


@pytest.mark.parametrize("kernel, stride, padding, h, w", POOL_CASES)
def test_avgpool2d(backend, check, kernel, stride, padding, h, w):
    rng = np.random.default_rng(4)
    layer = nn.AvgPool2d(kernel, stride=stride, padding=padding)
    check(layer, rng.standard_normal((2, 2, h, w)))


# ----------------------------------------------------------------------------- dense, activations, reshaping

@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_dense(backend, check, bias):
    rng = np.random.default_rng(5)
    layer = nn.Dense(5, 3, bias=bias, dtype=np.float64, generator=rng)
    if bias:
        layer.bias.data[:] = rng.standard_normal(3)
    check(layer, rng.standard_normal((4, 5)))


def test_relu(backend, check):
    check(nn.ReLU(), away_from_zero((3, 2, 3, 3), np.random.default_rng(6)))


@pytest.mark.parametrize("start_dim, shape", [(1, (2, 3, 2, 2)), (2, (2, 3, 2, 2)), (1, (3, 4))])
def test_flatten(backend, check, start_dim, shape):
    check(nn.Flatten(start_dim), np.random.default_rng(7).standard_normal(shape))


@pytest.mark.parametrize("layer_cls", [nn.LogSoftmax, nn.Softmax])
@pytest.mark.parametrize("dim, shape", [(1, (4, 5)), (-1, (2, 3, 4)), (0, (3, 4))])
def test_softmaxes(backend, check, layer_cls, dim, shape):
    rng = np.random.default_rng(8)
    check(layer_cls(dim=dim), 3 * rng.standard_normal(shape))


def test_softmaxes_large_logits(backend, check):
    """Log-sum-exp: logits of +-500 neither overflow nor break the gradient."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4)) + np.array([[500.0], [-500.0], [0.0]])
    check(nn.LogSoftmax(), x, label="[logsoftmax]")
    check(nn.Softmax(), x, label="[softmax]")


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_fixed_mask(backend, check, p):
    rng = np.random.default_rng(10)
    layer = nn.Dropout(p)
    x = rng.standard_normal((4, 6))
    layer.manual_seed(3)
    y = layer(x)
    dropped = y == 0
    assert dropped.any() and not dropped.all(), "the fixed mask must drop some elements and keep others"
    check(layer, x, before_forward=lambda: layer.manual_seed(3))


def test_dropout_eval_is_identity(backend, check):
    layer = nn.Dropout(0.5).eval()
    x = np.random.default_rng(11).standard_normal((3, 4))
    assert np.array_equal(layer(x), x)
    check(layer, x)


# ----------------------------------------------------------------------------- whole networks

def small_cnn(rng):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, dtype=np.float64, generator=rng),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dense(3 * 3 * 3, 4, dtype=np.float64, generator=rng),
        nn.LogSoftmax(dim=1),
    )


def test_sequential_cnn_end_to_end(backend, check):
    rng = np.random.default_rng(12)
    net = small_cnn(rng)
    errors = check(net, rng.standard_normal((2, 1, 6, 6)))
    assert {"0.weight", "0.bias", "4.weight", "4.bias"} <= set(errors)


def test_sequential_cnn_with_every_layer_kind(backend, check):
    """Strided non-square conv, avg-pool with padding, dropout (fixed mask), softmax."""
    rng = np.random.default_rng(13)
    dropout = nn.Dropout(0.3)
    net = nn.Sequential(
        nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 0), dtype=np.float64, generator=rng),
        nn.ReLU(),
        nn.AvgPool2d(2, stride=1, padding=1),
        nn.Conv2d(3, 2, 1, bias=False, dtype=np.float64, generator=rng),
        nn.MaxPool2d((2, 3), stride=(2, 1)),
        nn.Flatten(),
        dropout,
        nn.Dense(2 * 2 * 2, 3, dtype=np.float64, generator=rng),
        nn.Softmax(dim=1),
    )
    x = rng.standard_normal((2, 2, 5, 5))
    check(net, x, before_forward=lambda: dropout.manual_seed(3))


def test_sequential_cnn_with_loss(backend, record_errors, request):
    """Model + NLLLoss: d(loss)/d(input and parameters) by finite differences of the loss itself."""
    rng = np.random.default_rng(14)
    net = small_cnn(rng)
    criterion = nn.NLLLoss()
    x = rng.standard_normal((3, 1, 6, 6))
    target = np.array([0, 3, 1])

    net.zero_grad()
    criterion(net(x), target)
    grad_x = net.backward(criterion.backward())

    def f():
        return criterion(net(x), target)

    from nnscratch.gradient_check import numeric_gradient

    errors = {"input": relative_error(grad_x, numeric_gradient(f, x))}
    for name, param in net.named_parameters():
        errors[name] = relative_error(param.grad, numeric_gradient(f, param.data))
    record_errors(request.node.name, errors)
    assert max(errors.values()) <= TOL, errors


# ----------------------------------------------------------------------------- losses

def _loss_case(name, rng):
    if name == "CrossEntropyLoss":
        return 2 * rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    if name == "NLLLoss":
        logits = rng.standard_normal((5, 4))
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return log_probs, rng.integers(0, 4, 5)
    return rng.standard_normal((3, 2, 4)), rng.standard_normal((3, 2, 4))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_name", ["CrossEntropyLoss", "NLLLoss", "MSELoss"])
def test_losses(backend, record_errors, request, loss_name, reduction):
    rng = np.random.default_rng(15)
    loss = getattr(nn, loss_name)(reduction=reduction)
    input, target = _loss_case(loss_name, rng)
    error = check_loss(loss, input, target)
    record_errors(request.node.name, error)
    assert error <= TOL, f"{loss!r}: relative error {error}"


def test_cross_entropy_extreme_logits(backend, record_errors, request):
    loss = nn.CrossEntropyLoss()
    rng = np.random.default_rng(16)
    z = rng.standard_normal((3, 4)) + np.array([[800.0], [-800.0], [0.0]])
    error = check_loss(loss, z, np.array([1, 2, 3]))
    record_errors(request.node.name, error)
    assert error <= TOL
    assert np.isfinite(loss(z, np.array([1, 2, 3])))


# ----------------------------------------------------------------------------- the checker catches wrong gradients

class ScaledInputGradConv(nn.Conv2d):
    """Input gradient 1 % too large."""

    def backward(self, grad_output, need_input_grad=True):
        return super().backward(grad_output, need_input_grad) * 1.01


class ZeroBiasGradConv(nn.Conv2d):
    """Forgets the bias gradient (accumulates zeros instead)."""

    def backward(self, grad_output, need_input_grad=True):
        bias, self.bias = self.bias, None
        try:
            grad_x = super().backward(grad_output, need_input_grad)
        finally:
            self.bias = bias
        self.bias.accumulate_grad(np.zeros(self.bias.shape))
        return grad_x


class FlippedKernelConv(nn.Conv2d):
    """Input gradient through the flipped kernel (true convolution instead of correlation)."""

    def backward(self, grad_output, need_input_grad=True):
        super().backward(grad_output, need_input_grad=False)
        flipped = np.ascontiguousarray(self.weight.data[:, :, ::-1, ::-1])
        grad_x, _ = ops.conv2d_backward(self._input, flipped, grad_output, self.stride, self.padding,
                                        need_weight_grad=False)
        return grad_x


class UnscaledAvgPool(nn.AvgPool2d):
    """Forgets to divide by the window area."""

    def backward(self, grad_output, need_input_grad=True):
        return super().backward(grad_output, need_input_grad) * (self.kernel_size[0] * self.kernel_size[1])


@pytest.mark.parametrize(
    "make, bad_part",
    [
        (lambda rng: ScaledInputGradConv(2, 2, 3, padding=1, dtype=np.float64, generator=rng), "input"),
        (lambda rng: ZeroBiasGradConv(2, 2, 3, padding=1, dtype=np.float64, generator=rng), "bias"),
        (lambda rng: FlippedKernelConv(2, 2, 3, padding=1, dtype=np.float64, generator=rng), "input"),
        (lambda rng: UnscaledAvgPool(2), "input"),
    ],
    ids=["input_grad_x1.01", "bias_grad_dropped", "flipped_kernel", "avgpool_unscaled"],
)
def test_wrong_backward_is_caught(backend, make, bad_part):
    rng = np.random.default_rng(17)
    module = make(rng)
    x = rng.standard_normal((2, 2, 4, 4))
    with pytest.raises(GradcheckError, match=bad_part):
        gradcheck(module, x, tol=TOL)
    errors = check_module(module, x)
    assert errors[bad_part] > 1e-3, errors  # far above the tolerance, not a borderline call
    assert all(e <= TOL for name, e in errors.items() if name != bad_part), errors


def test_correct_module_passes_gradcheck(backend):
    rng = np.random.default_rng(17)
    errors = gradcheck(nn.Conv2d(2, 2, 3, padding=1, dtype=np.float64, generator=rng),
                       rng.standard_normal((2, 2, 4, 4)), tol=TOL)
    assert set(errors) == {"input", "weight", "bias"}


def test_dropout_in_training_mode_is_refused_up_front(backend):
    """A new mask at every forward pass makes the finite differences meaningless: say what to do."""
    rng = np.random.default_rng(22)
    net = nn.Sequential(nn.Dense(4, 3, dtype=np.float64, generator=rng), nn.Dropout(0.5))
    x = rng.standard_normal((2, 4))
    for run in (lambda: gradcheck(net, x, tol=TOL), lambda: check_module(net, x)):
        with pytest.raises(ValueError, match=r"training mode at 1 \(Dropout\(p=0.5\)\).*model\.eval\(\).*before_forward"):
            run()
    assert net[0].weight.grad is None  # refused before any pass

    net.eval()  # the identity: a deterministic function
    assert max(gradcheck(net, x, tol=TOL).values()) <= TOL
    net.train()
    assert max(gradcheck(net, x, tol=TOL, before_forward=lambda: net[1].manual_seed(0)).values()) <= TOL
    assert max(gradcheck(nn.Sequential(nn.Dense(4, 3, dtype=np.float64, generator=rng), nn.Dropout(0.0)),
                         x, tol=TOL).values()) <= TOL  # p = 0 draws no mask


def test_gradcheck_is_the_function_and_gradient_check_the_module():
    import importlib

    import nnscratch.gradient_check as gradient_check

    assert nn.gradcheck is gradient_check.gradcheck and callable(nn.gradcheck)
    assert callable(gradient_check.numeric_gradient) and callable(gradient_check.check_module)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("nnscratch.gradcheck")


# ----------------------------------------------------------------------------- frozen parameters

def test_frozen_weight_gets_no_grad(backend, check):
    rng = np.random.default_rng(18)
    layer = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, generator=rng)
    layer.weight.requires_grad = False
    errors = check(layer, rng.standard_normal((2, 2, 4, 4)))
    assert set(errors) == {"input", "bias"}
    assert layer.weight.grad is None
    assert layer.bias.grad is not None


def test_frozen_layers_of_a_network(backend, check):
    rng = np.random.default_rng(19)
    net = small_cnn(rng)
    net[0].requires_grad_(False)
    net[4].bias.requires_grad = False
    x = rng.standard_normal((2, 1, 6, 6))
    errors = check(net, x)
    assert set(errors) == {"input", "4.weight"}
    assert net[0].weight.grad is None and net[0].bias.grad is None and net[4].bias.grad is None
    assert net[4].weight.grad is not None

    # without an input gradient, the backward stops at the lowest trainable layer and still
    # fills the trainable parameters' gradients with the same values
    expected = net[4].weight.grad.copy()
    net.zero_grad()
    upstream = np.random.default_rng(0).standard_normal(net(x).shape)  # check_module's upstream (seed 0)
    assert net.backward(upstream, need_input_grad=False) is None
    assert net[0].weight.grad is None
    np.testing.assert_allclose(net[4].weight.grad, expected, rtol=1e-12, atol=1e-14)


def test_gradients_accumulate_until_zero_grad(backend):
    rng = np.random.default_rng(20)
    layer = nn.Conv2d(1, 2, 2, dtype=np.float64, generator=rng)
    x, g = rng.standard_normal((2, 1, 3, 3)), rng.standard_normal((2, 2, 2, 2))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-13)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-13)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


# ----------------------------------------------------------------------------- with 2 kernel threads

def test_two_threads(backend, check):
    """A few checks with 2 OpenMP threads (batches of 2 so both threads get images/planes)."""
    nn.set_num_threads(2)  # restored by the autouse fixture
    rng = np.random.default_rng(21)
    conv = nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1, dtype=np.float64, generator=rng)
    conv.bias.data[:] = rng.standard_normal(3)
    check(conv, rng.standard_normal((2, 2, 3, 3)), label="[conv]")
    check(nn.MaxPool2d(3, stride=2, padding=1), no_ties((2, 1, 4, 4), rng), label="[maxpool]")
    check(nn.AvgPool2d((2, 3), stride=1, padding=(1, 1)), rng.standard_normal((2, 1, 3, 3)), label="[avgpool]")

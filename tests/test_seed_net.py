"""The seed article's Net (section 4.2) end to end: forward, backward, SGD step, both backends,
and (when PyTorch is installed) parity with the seed's own PyTorch code in float64."""
import numpy as np
import pytest

import nnscratch
from nnscratch import SGD, CrossEntropyLoss, NLLLoss, models

import torch_reference  # tests/torch_reference.py: the seed's PyTorch Net

BACKENDS = ["numpy", "cython"]
BATCH = 8


def images(seed=0, n=BATCH, dtype=np.float32):
    """A batch of random 1×28×28 "images", normalized as the seed's MNIST transform does."""
    rng = np.random.default_rng(seed)
    x = (rng.uniform(0.0, 1.0, size=(n, 1, 28, 28)) - 0.1307) / 0.3081
    return x.astype(dtype)


def labels(seed=0, n=BATCH):
    return np.random.default_rng(seed + 100).integers(0, 10, size=n)


def fresh_net(seed=0, **kwargs):
    nnscratch.manual_seed(seed)
    return models.seed_net(**kwargs)


def fix_dropout(net, seed=0):
    """Give both dropout layers their own seeded generator, so every forward draws the same masks."""
    net.dropout1.manual_seed(seed)
    net.dropout2.manual_seed(seed + 1)


def forward_backward(net, x, t, criterion=None):
    criterion = criterion or NLLLoss()
    with nnscratch.enable_grad():  # some tests backpropagate in eval mode (dropout off)
        y = net(x)
    loss = criterion(y, t)
    net.zero_grad()
    grad_x = net.backward(criterion.backward())
    return y, loss, grad_x


def relative_difference(a, b):
    """``max|a − b| / max|b|`` (b is the reference)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ----------------------------------------------------------------------------- nnscratch alone

@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_shape_and_log_probabilities(backend):
    net = fresh_net()
    with nnscratch.use_backend(backend):
        for mode in ("eval", "train"):
            getattr(net, mode)()
            y = net(images())
            assert y.shape == (BATCH, 10) and y.dtype == np.float32
            assert np.all(np.isfinite(y)) and np.all(y <= 0)
            np.testing.assert_allclose(np.exp(y.astype(np.float64)).sum(axis=1), 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_parameter_gets_a_gradient_of_its_shape(backend):
    net = fresh_net().train()
    fix_dropout(net)
    with nnscratch.use_backend(backend):
        _, loss, grad_x = forward_backward(net, images(), labels())
    assert np.isfinite(loss) and loss > 0
    assert grad_x.shape == (BATCH, 1, 28, 28) and grad_x.dtype == np.float32
    names = []
    for name, p in net.named_parameters():
        names.append(name)
        assert p.grad is not None, name
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32, name
        assert np.all(np.isfinite(p.grad)) and np.any(p.grad != 0), name
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                     "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


@pytest.mark.parametrize("backend, mode", [("numpy", "eval"), ("cython", "eval"), ("cython", "train_fixed_masks")])
def test_loss_decreases_on_a_fixed_batch(backend, mode):
    net = fresh_net()
    x, t = images(), labels()
    optimizer = SGD(net.parameters(), lr=0.01, momentum=0.9)
    losses = []
    with nnscratch.use_backend(backend):
        for _ in range(5):
            if mode == "eval":
                net.eval()
            else:
                net.train()
                fix_dropout(net)
            optimizer.zero_grad()
            _, loss, _ = forward_backward(net, x, t)
            optimizer.step()
            losses.append(loss)
        if mode == "eval":
            net.eval()
        else:
            fix_dropout(net)  # the loss that was minimized: the one under the same masks
        final = NLLLoss()(net(x), t)
    assert losses[0] == pytest.approx(np.log(10), rel=0.1)  # an untrained net is close to uniform
    assert losses[-1] < losses[0]
    assert final < 0.8 * losses[0], losses + [final]


def test_backends_agree():
    x, t = images(), labels()
    results = {}
    for backend in BACKENDS:
        net = fresh_net().train()
        fix_dropout(net)  # same masks in both runs
        with nnscratch.use_backend(backend):
            y, loss, grad_x = forward_backward(net, x, t)
        results[backend] = (y, loss, grad_x, {n: p.grad.copy() for n, p in net.named_parameters()})
    (y0, l0, gx0, g0), (y1, l1, gx1, g1) = results["numpy"], results["cython"]
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    assert l1 == pytest.approx(l0, rel=1e-5)
    assert relative_difference(gx1, gx0) < 1e-4
    for name in g0:
        assert relative_difference(g1[name], g0[name]) < 1e-4, name


def test_backends_agree_in_float64():
    x, t = images(dtype=np.float64), labels()
    results = {}
    for backend in BACKENDS:
        net = fresh_net().eval().double()
        with nnscratch.use_backend(backend):
            y, _, grad_x = forward_backward(net, x, t)
        results[backend] = (y, grad_x, [p.grad.copy() for p in net.parameters()])
    (y0, gx0, g0), (y1, gx1, g1) = results["numpy"], results["cython"]
    assert y0.dtype == y1.dtype == np.float64
    assert relative_difference(y1, y0) < 1e-12
    assert relative_difference(gx1, gx0) < 1e-11
    for a, b in zip(g1, g0):
        assert relative_difference(a, b) < 1e-11


# ----------------------------------------------------------------------------- PyTorch parity

@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


def twin_nets(torch, log_softmax=True):
    """An nnscratch seed net and the torch Net holding the same float64 weights, both in eval mode."""
    net = fresh_net(log_softmax=log_softmax).eval().double()
    tnet = torch_reference.seed_net(log_softmax).double().eval()
    state = {name: torch.from_numpy(value.copy()) for name, value in net.state_dict().items()}
    tnet.load_state_dict(state, strict=True)  # same keys, same shapes
    return net, tnet


def torch_forward_backward(torch, tnet, x, t, criterion):
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = tnet(tx)
    tloss = criterion(ty, torch.tensor(t))
    tnet.zero_grad()
    tloss.backward()
    return ty.detach().numpy(), tloss.item(), tx.grad.numpy()


def assert_gradients_match(net, tnet, grad_x, tgrad_x, rel=1e-9):
    assert relative_difference(grad_x, tgrad_x) <= rel
    tgrads = dict(tnet.named_parameters())
    for name, p in net.named_parameters():
        tgrad = tgrads[name].grad.numpy()
        assert p.grad.shape == tgrad.shape, name
        assert relative_difference(p.grad, tgrad) <= rel, (name, relative_difference(p.grad, tgrad))


def test_torch_state_dict_keys_match(torch):
    net = models.seed_net()
    tnet = torch_reference.seed_net()
    tshapes = {k: tuple(v.shape) for k, v in tnet.state_dict().items()}
    assert list(net.state_dict()) == list(tshapes)
    assert {k: v.shape for k, v in net.state_dict().items()} == tshapes
    # and a torch checkpoint loads into nnscratch as is
    net.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    np.testing.assert_array_equal(net.fc1.weight.data, tnet.fc1.weight.detach().numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_parity_nll_forward_backward_and_sgd(torch, backend):
    net, tnet = twin_nets(torch)
    x, t = images(dtype=np.float64), labels()
    optimizer = SGD(net.parameters(), lr=0.01, momentum=0.9)
    toptimizer = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
    with nnscratch.use_backend(backend):
        for step in range(2):  # the second step exercises the momentum buffer
            y, loss, grad_x = forward_backward(net, x, t, NLLLoss())
            ty, tloss, tgrad_x = torch_forward_backward(torch, tnet, x, t, torch.nn.NLLLoss())
            assert y.dtype == np.float64
            np.testing.assert_allclose(y, ty, rtol=0, atol=1e-10)
            assert loss == pytest.approx(tloss, rel=1e-12, abs=1e-12)
            assert_gradients_match(net, tnet, grad_x, tgrad_x)
            optimizer.step()
            toptimizer.step()
            tparams = dict(tnet.named_parameters())
            for name, p in net.named_parameters():
                np.testing.assert_allclose(p.data, tparams[name].detach().numpy(), rtol=1e-10, atol=1e-12,
                                           err_msg=f"{name} after step {step + 1}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_parity_cross_entropy_on_logits(torch, backend):
    net, tnet = twin_nets(torch, log_softmax=False)
    x, t = images(1, dtype=np.float64), labels(1)
    with nnscratch.use_backend(backend):
        y, loss, grad_x = forward_backward(net, x, t, CrossEntropyLoss())
    ty, tloss, tgrad_x = torch_forward_backward(torch, tnet, x, t, torch.nn.CrossEntropyLoss())
    np.testing.assert_allclose(y, ty, rtol=0, atol=1e-10)
    assert loss == pytest.approx(tloss, rel=1e-12)
    assert_gradients_match(net, tnet, grad_x, tgrad_x)


def test_torch_parity_seed_double_log_softmax(torch):
    """The seed trains its log_softmax output with CrossEntropyLoss (a second log-softmax);
    nnscratch reproduces that pairing exactly too. Log-softmax is idempotent (Σ_k exp(y_k) = 1 for
    log-probabilities y, so log_softmax(y) = y - log 1 = y): the pairing gives the same loss and the
    same gradients as NLLLoss, only with a wasted log-softmax."""
    net, tnet = twin_nets(torch)
    x, t = images(2, dtype=np.float64), labels(2)
    y, loss, grad_x = forward_backward(net, x, t, CrossEntropyLoss())
    ty, tloss, tgrad_x = torch_forward_backward(torch, tnet, x, t, torch.nn.CrossEntropyLoss())
    assert loss == pytest.approx(tloss, rel=1e-12)
    assert_gradients_match(net, tnet, grad_x, tgrad_x)
    # ... and it equals the cross-entropy of the model's probabilities (NLLLoss), gradients included
    grads = {name: p.grad.copy() for name, p in net.named_parameters()}
    _, nll, nll_grad_x = forward_backward(net, x, t, NLLLoss())
    assert nll == pytest.approx(loss, rel=1e-12)
    assert relative_difference(nll_grad_x, grad_x) < 1e-10
    for name, p in net.named_parameters():
        assert relative_difference(p.grad, grads[name]) < 1e-10, name

"""The seed's Net in both libraries, its training step and a batch: what every benchmark here trains."""
import importlib.util
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH = 64
EPOCH_STEPS = math.ceil(60000 / BATCH)  # 938
LR, MOMENTUM = 0.01, 0.9


def torch_reference():
    """tests/torch_reference.py (the seed's PyTorch Net), loaded by path: it lives with the tests,
    outside the installed package, since users never import it."""
    spec = importlib.util.spec_from_file_location("torch_reference", REPO / "tests" / "torch_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_twin(torch, state):
    """A PyTorch Net holding the weights of an nnscratch ``state_dict`` (the keys match)."""
    net = torch_reference().seed_net()
    net.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=True)
    return net


def nn_train_step(net, optimizer, criterion):
    """``step(x, t)``: zero_grad, forward, loss, backward (no gradient for the images), SGD step; returns the loss."""
    def step(x, t):
        optimizer.zero_grad()
        loss = criterion(net(x), t)
        net.backward(criterion.backward(), need_input_grad=False)
        optimizer.step()
        return loss
    return step


def torch_train_step(torch, net, optimizer):
    """The same step in PyTorch (NLL loss on the Net's log-probabilities)."""
    nll = torch.nn.functional.nll_loss

    def step(x, t):
        optimizer.zero_grad()
        loss = nll(net(x), t)
        loss.backward()
        optimizer.step()
        return loss
    return step


def seed_step(nnscratch, net):
    """The training step of an nnscratch Net with the benchmark's optimizer (SGD, momentum) and loss."""
    return nn_train_step(net, nnscratch.SGD(net.parameters(), lr=LR, momentum=MOMENTUM), nnscratch.NLLLoss())


def seed_batch(random=False):
    """``(x, t, source)``: the batch the seed Net's rows time. The first batch of a shuffled MNIST epoch
    (seed 0, ``prepare_images``) when the files are on this machine (``source`` "mnist"), else (or with
    ``random``) :func:`random_batch` ("random"). Real images matter: PyTorch's max-pool is branchy and
    takes 40 % less time on real activations than on random ones (nnscratch's is branch-free), so a
    random batch flatters nnscratch's step against PyTorch's by about as much as the real epoch showed."""
    if not random:
        from nnscratch.data import DataLoader, MNISTNotFoundError, load_mnist, prepare_images
        try:
            (images, labels), _ = load_mnist(download=False, progress=False)
        except MNISTNotFoundError:
            pass
        else:
            x, t = next(iter(DataLoader(images, labels, batch_size=BATCH, shuffle=True, seed=0, transform=prepare_images)))
            return x, t, "mnist"
    return (*random_batch(0), "random")


def random_batch(seed=0):
    """A batch of 64 random "images" in [-1, 1] (what prepare_images gives) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(BATCH, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, size=BATCH).astype(np.int64)
    return x, t

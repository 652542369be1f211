"""Inference keeps nothing and is thread-safe; layer sizes accept NumPy integers; ReLU on 0-d input.

* After ``predict``, ``predict_proba``, ``evaluate`` and ``extract_features`` the model holds no
  activations, an eval-mode or ``no_grad`` forward keeps nothing, and a backward after such a
  forward says why it cannot run (``enable_grad`` is the way to backpropagate in eval mode).
* Inference on one model from several threads gives what one thread gives and changes no module's
  mode (checked with a forced interleaving and with free-running threads).
"""
import threading
from collections import OrderedDict

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import models, transfer
from nnscratch.data import DataLoader
from nnscratch.nn.module import enable_grad, inference, no_grad

from strategies import random_images

NETS = {"seed_net": models.seed_net, "keras_transfer_net": models.keras_transfer_net}


def held_arrays(model):
    """``{"layer.attribute": nbytes}`` of every NumPy array a module of `model` holds outside its parameters."""
    return {f"{name or 'model'}.{attribute}": value.nbytes
            for name, module in model.named_modules() for attribute, value in vars(module).items()
            if isinstance(value, np.ndarray)}


def trained_one_step(make_net, x, classes):
    """A net after one training step: its layers hold that step's activations (what inference must drop)."""
    nn.manual_seed(0)
    net = make_net()
    criterion = nn.CrossEntropyLoss()
    y = np.arange(len(x)) % classes
    criterion(net(x), y)
    net.backward(criterion.backward())
    assert held_arrays(net), "a training forward keeps the activations its backward needs"
    return net


def modes(model):
    return [module.training for module in model.modules()]


# ----------------------------------------------------------------------------- nothing kept

@pytest.mark.parametrize("net_name", NETS)
@pytest.mark.parametrize("call", ["predict", "predict_proba", "evaluate", "extract_features"])
def test_inference_leaves_the_model_holding_no_activations(net_name, call):
    x = random_images(6)
    classes = 10 if net_name == "seed_net" else 5
    # extract_features runs the layers before fc2 only: fc2 and what follows keep the training step's
    net = NETS[net_name]() if call == "extract_features" else trained_one_step(NETS[net_name], x, classes)
    before = modes(net)
    if call == "predict":
        nn.predict(net, x, batch_size=4)
    elif call == "predict_proba":
        nn.training.predict_proba(net, x, batch_size=4)
    elif call == "evaluate":
        nn.evaluate(net, nn.CrossEntropyLoss(), DataLoader(x, np.arange(6) % classes, batch_size=4))
    else:
        transfer.extract_features(net, x, before="fc2", batch_size=4)
    assert held_arrays(net) == {}, f"{call} left arrays in the layers"
    assert modes(net) == before, f"{call} changed a module's mode"


def test_extract_features_drops_what_the_layers_it_runs_kept():
    x = random_images(6)
    net = trained_one_step(models.seed_net, x, 10)
    transfer.extract_features(net, x, before="fc2", batch_size=4)
    assert set(held_arrays(net)) == {"fc2._input", "log_softmax._output"}  # not run: the training step's


@pytest.mark.parametrize("layer", [
    nn.Conv2d(1, 2, 3), nn.Dense(28, 3), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Dropout(0.5),
    nn.Flatten(), nn.LogSoftmax(dim=1), nn.Softmax(dim=1),
], ids=lambda layer: type(layer).__name__)
def test_an_eval_or_no_grad_forward_keeps_nothing_and_backward_says_why(layer):
    x = random_images(2)
    if isinstance(layer, nn.Dense):
        x = x[:, 0, 0, :]
    layer.train()
    y = layer(x)
    assert held_arrays(layer) or isinstance(layer, (nn.AvgPool2d, nn.Dropout, nn.Flatten))
    assert layer.backward(np.ones_like(y)).shape == x.shape

    layer.eval()
    y = layer(x)
    assert held_arrays(layer) == {}
    with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}.*kept nothing.*in eval mode.*enable_grad"):
        layer.backward(np.ones_like(y))

    layer.train()
    with no_grad():
        y = layer(x)
    assert held_arrays(layer) == {}
    with pytest.raises(RuntimeError, match=r"kept nothing.*inside no_grad\(\)"):
        layer.backward(np.ones_like(y))

    with enable_grad():  # and in eval mode, enable_grad keeps what backward needs
        layer.eval()
        y = layer(x)
    assert layer.backward(np.ones_like(y)).shape == x.shape


def test_backward_after_predict_refuses_instead_of_using_older_activations():
    x = random_images(4)
    net = trained_one_step(models.seed_net, x, 10)
    net(x)  # a training forward: a backward could follow...
    nn.predict(net, random_images(3, seed=1))  # ...but predict ran since, on other images
    with pytest.raises(RuntimeError, match=r"log_softmax|LogSoftmax.*kept nothing.*inside inference\(\)"):
        net.backward(np.ones((4, 10), dtype=np.float32))


def test_enable_grad_gives_the_training_mode_gradients_in_eval_mode():
    """A net without dropout computes the same function in both modes: the same gradients."""
    net = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 2, 3)), ("relu", nn.ReLU()), ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("fc", nn.Dense(2 * 13 * 13, 3)), ("log_softmax", nn.LogSoftmax(dim=1)),
    ]))
    x, g = random_images(2), np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    net(x)
    grad_train = net.backward(g)
    weight_grad = net.conv.weight.grad.copy()
    net.zero_grad()
    net.eval()
    with enable_grad():
        net(x)
    np.testing.assert_array_equal(net.backward(g), grad_train)
    np.testing.assert_array_equal(net.conv.weight.grad, weight_grad)


def test_evaluate_leaves_the_criterion_holding_nothing():
    x = random_images(4)
    net, criterion = models.seed_net(), nn.NLLLoss()
    criterion(net(x), np.arange(4))
    nn.evaluate(net, criterion, DataLoader(x, np.arange(4), batch_size=4))
    assert criterion._grad is None
    with pytest.raises(RuntimeError, match=r"NLLLoss.*kept nothing.*inference\(\)"):
        criterion.backward()
    criterion(net(x), np.arange(4))  # a training-mode call keeps its gradient again
    assert criterion.backward().shape == (4, 10)


def test_contexts_are_per_thread_and_restored():
    layer, x, seen = nn.ReLU(), np.ones((2, 2), dtype=np.float32), []
    with no_grad():
        other = threading.Thread(target=lambda: seen.append(bool(held_arrays(layer)) or layer(x) is None
                                                            or bool(held_arrays(layer))))
        other.start()
        other.join()
    assert seen == [True], "no_grad in one thread must not reach another"
    layer(x)
    assert held_arrays(layer), "no_grad is over after its block"
    with pytest.raises(ZeroDivisionError), inference():
        1 / 0
    layer(x)
    assert held_arrays(layer), "inference is over after its block, even one left by an exception"


# ----------------------------------------------------------------------------- threads

class Gate(nn.Module):
    """The identity, which makes each thread wait inside its forward until the test releases it."""

    def __init__(self):
        super().__init__()
        self.arrived, self.release = {}, {}

    def forward(self, x):
        name = threading.current_thread().name
        self.arrived[name].set()
        assert self.release[name].wait(10), "the test never released this thread"
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


class ModeSpy(nn.Module):
    """The identity, recording every write of its ``training`` flag."""

    def __init__(self):
        self.__dict__["writes"] = []  # before Module.__init__, which sets training
        super().__init__()

    @property
    def training(self):
        return self._training

    @training.setter
    def training(self, value):
        self.writes.append(value)
        self.__dict__["_training"] = value

    def forward(self, x):
        return x

    def backward(self, grad_output, need_input_grad=True):
        return grad_output


def gated_net():
    return nn.Sequential(OrderedDict([("fc1", nn.Dense(8, 64)), ("gate", Gate()), ("dropout", nn.Dropout(0.5)),
                                      ("fc2", nn.Dense(64, 3)), ("spy", ModeSpy())]))


def test_inference_never_writes_a_training_flag():
    net = gated_net()
    net.gate.arrived["MainThread"], net.gate.release["MainThread"] = threading.Event(), threading.Event()
    net.gate.release["MainThread"].set()
    net.spy.writes.clear()
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    nn.training.predict_proba(net, x)
    nn.evaluate(net, nn.CrossEntropyLoss(), [(x, np.zeros(5, dtype=np.int64))])
    assert net.spy.writes == []


def test_two_interleaved_predicts_match_one_thread_and_keep_the_mode():
    """The interleaving that broke the old eval_mode toggling: A enters, B enters, A leaves, B leaves.
    B then ran its dropout after A restored training mode, and B restored the eval mode it had seen."""
    nn.manual_seed(0)
    net = gated_net()  # in training mode
    x = np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32)
    for name in ("A", "B", "MainThread"):
        net.gate.arrived[name], net.gate.release[name] = threading.Event(), threading.Event()
    net.gate.release["MainThread"].set()
    expected = nn.training.predict_proba(net, x)
    results = {}

    def run():
        results[threading.current_thread().name] = nn.training.predict_proba(net, x)

    a, b = threading.Thread(target=run, name="A"), threading.Thread(target=run, name="B")
    a.start()
    assert net.gate.arrived["A"].wait(10)
    b.start()
    assert net.gate.arrived["B"].wait(10)
    net.gate.release["A"].set()
    a.join(10)
    net.gate.release["B"].set()
    b.join(10)
    assert set(results) == {"A", "B"}
    for name in "AB":
        np.testing.assert_array_equal(results[name], expected, err_msg=f"thread {name}")
    assert all(modes(net)), "the model was in training mode and must stay so"


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_threads_sharing_a_model_get_the_single_thread_answers(backend_name):
    with nn.use_backend(backend_name):
        nn.manual_seed(0)
        net = nn.Sequential(  # every kind of layer of the seed's net, small enough for a fast test
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Dense(4 * 3 * 3, 10), nn.Dropout(0.5), nn.LogSoftmax(dim=1),
        )  # in training mode
        x = random_images(24, size=8)
        labels = np.arange(24) % 10
        criterion = nn.NLLLoss()
        loader = DataLoader(x, labels, batch_size=8)
        expected_proba = nn.training.predict_proba(net, x, batch_size=8)
        expected_eval = nn.evaluate(net, criterion, loader)
        for trial in range(3):
            start, results, errors = threading.Barrier(4), [], []

            def run(i):
                try:
                    start.wait(10)
                    for _ in range(2):
                        if i % 2:
                            results.append(("proba", nn.training.predict_proba(net, x, batch_size=8)))
                        else:
                            results.append(("evaluate", nn.evaluate(net, criterion, loader)))
                except Exception as error:  # reported below with the trial
                    errors.append(error)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == [] and len(results) == 8, f"trial {trial}: {errors}"
            for kind, result in results:
                if kind == "proba":
                    np.testing.assert_array_equal(result, expected_proba, err_msg=f"trial {trial}")
                else:
                    assert result["loss"] == expected_eval["loss"], f"trial {trial}"
                    np.testing.assert_array_equal(result["confusion"], expected_eval["confusion"])
            assert all(modes(net)), f"trial {trial}: the model left training mode"
            assert held_arrays(net) == {}


# ----------------------------------------------------------------------------- sizes and 0-d inputs

def test_layer_sizes_accept_numpy_integers():
    conv = nn.Conv2d(np.int64(1), np.int32(4), np.int64(3), stride=np.int64(1), padding=np.uint8(1))
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (1, 4, (3, 3))
    assert type(conv.in_channels) is int and conv.weight.shape == (4, 1, 3, 3)
    dense = nn.Dense(np.int64(6), np.uint16(2))
    assert (dense.in_features, dense.out_features) == (6, 2) and type(dense.out_features) is int
    assert nn.MaxPool2d(np.int64(2)).kernel_size == (2, 2) and nn.AvgPool2d(np.int32(3)).stride == (3, 3)
    assert nn.Dropout(np.float32(0.25)).p == 0.25
    assert repr(conv) == "Conv2d(1, 4, kernel_size=(3, 3), padding=(1, 1))"


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(True, 4, 3), r"Conv2d\(True, 4, kernel_size=3\): in_channels must be a positive int, got True"),
    (lambda: nn.Conv2d(1, np.int64(0), 3), r"out_channels must be a positive int, got np.int64\(0\)|got 0"),
    (lambda: nn.Conv2d(1.0, 4, 3), r"in_channels must be a positive int, got 1.0"),
    (lambda: nn.Dense(4, False), r"Dense\(4, False\): out_features must be a positive int, got False"),
    (lambda: nn.Dense("4", 2), r"in_features must be a positive int, got '4'"),
    (lambda: nn.Dropout(True), r"Dropout\(p=True\): p must be in \[0, 1\)"),
    (lambda: nn.Dropout("0.5"), r"p must be in \[0, 1\).*got '0.5'"),
])
def test_layer_sizes_refuse_bools_and_non_integers(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_relu_of_a_0d_input_is_a_0d_array_with_a_backward(backend):
    relu = nn.ReLU()
    for value, grad in ((1.5, 2.0), (-1.5, 0.0)):
        y = relu(np.array(value, dtype=np.float32))
        assert isinstance(y, np.ndarray) and y.shape == () and y == max(value, 0)
        g = relu.backward(np.array(2.0, dtype=np.float32))
        assert isinstance(g, np.ndarray) and g.shape == () and g == grad
    dropout = nn.Dropout(0.5)
    dropout.manual_seed(0)
    y = dropout(np.array(3.0))
    assert isinstance(y, np.ndarray) and y.shape == () and y in (0.0, 6.0)
    assert isinstance(dropout.backward(np.array(1.0)), np.ndarray)

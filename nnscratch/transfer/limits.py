"""When transfer fails: the protocol shared by notebook 06 and ``examples/transfer_limits.py``.

A source network learns the digits 0-4 (task A). Then:

* **zero-shot** (:func:`zero_shot`): the source network, untouched, on its own test set after
  each input shift of :mod:`nnscratch.data.shifts`;
* **the shifts as targets** (:func:`transfer_three_ways`): with a small label budget of
  shifted 0-4 images, the network is trained three ways: *frozen* (pre-trained body frozen,
  its features cached once, fc1 and a new fc2 trained on them), *fine-tuned* (the frozen
  model's head, then everything trained on, the body at a tenth of the head's learning rate)
  and *scratch* (random weights, the same labels);
* **task relatedness**: a new task on frozen features (:func:`frozen_transfer`: parity of the
  digit, or the digits 5-9), from a source trained on real or on random labels;
* **two exact constructions**: :func:`negate_first_layer` undoes an inversion,
  :func:`permute_input_columns` undoes a pixel permutation for a dense network.

The network is ``models.keras_transfer_net`` at half width (16 filters): the study trains some
fifty networks on two shared cores, and the second convolution, almost all of the compute,
costs a quarter of the full width's.
"""
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from .. import transfer
from ..nn.activation import ReLU
from ..nn.container import Sequential
from ..data import DataLoader, load_mnist, subset_by_labels
from ..nn.dense import Dense
from ..nn.flatten import Flatten
from ..nn.losses import CrossEntropyLoss
from ..models import keras_transfer_net
from ..optim import SGD
from ..rng import manual_seed
from ..training import evaluate, fit

SOURCE_DIGITS = (0, 1, 2, 3, 4)    # task A
TARGET_DIGITS = (5, 6, 7, 8, 9)    # task B, for the relatedness comparison
STRATEGIES = ("frozen", "fine-tuned", "scratch")
BODY = ("conv1", "conv2")          # what the frozen strategy keeps fixed
HEAD = ("fc1", "fc2")              # what it trains (fc1 from the source, fc2 new)
FEATURE_CUT = "dropout1"           # features = the max-pool output, deterministic in train and eval mode
MOMENTUM = 0.9
EVAL_BATCH = 500


@dataclass(frozen=True)
class Config:
    """Sizes of the study. ``budget``: labelled target images per class; epochs count passes over them."""

    filters: int = 16
    source_epochs: int = 1
    source_batch: int = 64
    lr: float = 0.05
    budget: int = 20
    batch: int = 25
    head_epochs: int = 60        # frozen: on cached features, cheap
    fine_epochs: int = 20        # fine-tuned: after the head epochs
    scratch_epochs: int = 40
    body_lr_factor: float = 0.1
    memorize_images: int = 500   # the random-label source (and its real-label control)
    memorize_epochs: int = 50
    train_limit: int = None      # task A training images (None: all 30,596)
    test_limit: int = None       # test images per task (None: all)


FULL = Config()
QUICK = replace(FULL, source_batch=32, budget=2, batch=10, head_epochs=3, fine_epochs=1, scratch_epochs=2,
                memorize_images=25, memorize_epochs=2, train_limit=300, test_limit=100)


def _limit(pair, n, seed):
    """The first `n` samples of a seeded shuffle, in their original order (all when n is None)."""
    images, labels = pair
    if n is None or n >= len(labels):
        return images, labels
    index = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return images[index], labels[index]


def load_tasks(cfg, seed=0):
    """MNIST's uint8 images, offline: {"A": (train, test), "B": (train, test)}, each an
    (images, labels) pair; A = digits 0-4, B = digits 5-9 relabelled 0-4; ``cfg``'s limits applied.
    ``digits_A_train``/``digits_A_test`` hold A's labels as digits (equal to its labels: 0-4)."""
    (train_images, train_labels), (test_images, test_labels) = load_mnist()
    tasks = {}
    for name, digits in (("A", SOURCE_DIGITS), ("B", TARGET_DIGITS)):
        train_pair = subset_by_labels(train_images, train_labels, digits)
        test_pair = subset_by_labels(test_images, test_labels, digits)
        tasks[name] = (_limit(train_pair, cfg.train_limit, seed), _limit(test_pair, cfg.test_limit, seed))
    return tasks


def network(cfg, num_classes=5):
    """The study's convnet: ``keras_transfer_net`` with ``cfg.filters`` filters (logits out)."""
    return keras_transfer_net(num_classes=num_classes, filters=cfg.filters)


def dense_network(num_classes=5, hidden=128, pixels=28 * 28):
    """A network without convolutions: flatten, fc1 (pixels -> hidden), ReLU, fc2 (logits)."""
    return Sequential(OrderedDict([("flatten", Flatten(1)), ("fc1", Dense(pixels, hidden)), ("relu1", ReLU()),
                                   ("fc2", Dense(hidden, num_classes))]))


def copy_of(model):
    """A new network of the same architecture holding copies of `model`'s parameters."""
    twin = transfer.build_model(transfer.architecture(model))
    twin.load_state_dict(model.state_dict())
    return twin


def train(model, inputs, labels, *, epochs, batch_size, lr, seed, params=None, transform=None):
    """SGD with momentum 0.9 and cross-entropy (the seed article's 4.3, on logits) for `epochs`
    epochs over seeded shuffles; `params`: parameter groups or list (default: the trainable ones)."""
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = SGD(params, lr=lr, momentum=MOMENTUM)
    loader = DataLoader(inputs, labels, batch_size=min(batch_size, len(labels)), shuffle=True, seed=seed,
                        transform=transform)
    return fit(model, CrossEntropyLoss(), optimizer, loader, epochs=epochs, progress=False, log_every=None)


def accuracy(model, inputs, labels, transform=None):
    """Accuracy in eval mode (dropout off)."""
    loader = DataLoader(inputs, labels, batch_size=EVAL_BATCH, transform=transform)
    return evaluate(model, None, loader)["accuracy"]


def train_source(inputs, labels, cfg, seed, num_classes=5, dense=False):
    """A source network (convnet, or :func:`dense_network` if `dense`) trained on prepared `inputs`
    for ``cfg.source_epochs`` epochs; weights drawn from ``manual_seed([seed, 1])``."""
    manual_seed([seed, 1])
    model = dense_network(num_classes) if dense else network(cfg, num_classes)
    train(model, inputs, labels, epochs=cfg.source_epochs, batch_size=cfg.source_batch, lr=cfg.lr, seed=seed)
    return model


def zero_shot(model, images, labels, shifts):
    """Accuracy of `model`, unchanged, on uint8 `images` under each shift: {shift name: accuracy}."""
    return {name: accuracy(model, images, labels, transform=shift) for name, shift in shifts.items()}


def frozen_transfer(source, train_inputs, train_labels, test_inputs, test_labels, cfg, seed, num_classes=5):
    """Feature extraction: `source`'s body frozen and run once on every image (cached features),
    fc1 (from the source) and a new fc2 trained on them. Returns (model, test accuracy)."""
    manual_seed([seed, 2])
    model = copy_of(source)
    transfer.replace_head(model, num_classes)
    transfer.freeze(model, list(BODY))
    head = model[FEATURE_CUT:]   # shares its layers with `model`
    features = transfer.extract_features(model, train_inputs, before=FEATURE_CUT, batch_size=EVAL_BATCH)
    test_features = transfer.extract_features(model, test_inputs, before=FEATURE_CUT, batch_size=EVAL_BATCH)
    train(head, features, train_labels, epochs=cfg.head_epochs, batch_size=cfg.batch, lr=cfg.lr, seed=seed)
    return model, accuracy(head, test_features, test_labels)


def transfer_three_ways(source, train_inputs, train_labels, test_inputs, test_labels, cfg, seed, num_classes=5):
    """Test accuracy of the frozen, fine-tuned and scratch strategies on prepared inputs: {strategy: accuracy}."""
    model, frozen = frozen_transfer(source, train_inputs, train_labels, test_inputs, test_labels, cfg, seed,
                                    num_classes)
    manual_seed([seed, 3])
    transfer.unfreeze(model)
    groups = transfer.param_groups(model, lr=cfg.lr, body_lr=cfg.lr * cfg.body_lr_factor, head=HEAD)
    train(model, train_inputs, train_labels, epochs=cfg.fine_epochs, batch_size=cfg.batch, lr=cfg.lr, seed=seed,
          params=groups)
    fine_tuned = accuracy(model, test_inputs, test_labels)

    manual_seed([seed, 4])
    scratch = network(cfg, num_classes)
    train(scratch, train_inputs, train_labels, epochs=cfg.scratch_epochs, batch_size=cfg.batch, lr=cfg.lr,
          seed=seed)
    return {"frozen": frozen, "fine-tuned": fine_tuned, "scratch": accuracy(scratch, test_inputs, test_labels)}


def memorizer(inputs, labels, cfg, seed, num_classes=5):
    """A convnet trained ``cfg.memorize_epochs`` epochs on `inputs` (e.g. with random labels)."""
    manual_seed([seed, 5])
    model = network(cfg, num_classes)
    train(model, inputs, labels, epochs=cfg.memorize_epochs, batch_size=cfg.batch * 2, lr=cfg.lr, seed=seed)
    return model


def negate_first_layer(model, layer="conv1"):
    """A copy of `model` whose `layer` weights are negated and bias kept: for inputs ``-x`` it
    computes exactly what `model` computes for ``x``, since ``(-W)(-x) + b = Wx + b`` term by term
    (a sign flip is exact in floating point, and the sums run in the same order)."""
    twin = copy_of(model)
    weight = dict(twin.named_parameters())[f"{layer}.weight"]
    weight.data[...] = -weight.data
    return twin


def permute_input_columns(model, permutation, layer="fc1"):
    """A copy of a dense `model` whose `layer` weight columns are reordered, ``W'[:, i] = W[:, permutation[i]]``:
    on inputs ``x[permutation]`` it computes ``W'x' = Wx``, the same terms summed in another order."""
    twin = copy_of(model)
    weight = dict(twin.named_parameters())[f"{layer}.weight"]
    permutation = np.asarray(permutation)
    if permutation.shape != (weight.shape[1],):
        raise ValueError(f"permute_input_columns: {layer} takes {weight.shape[1]} inputs, the permutation has "
                         f"shape {permutation.shape}")
    weight.data[...] = weight.data[:, permutation]
    return twin


def mean_sd(values):
    """(mean, sample standard deviation; 0 for one value)."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0

"""The protocol of examples/mnist_transfer.py: tasks, network cut, budgets, steps, seeds, targets.

Part of the ``mnist_transfer`` example (its runs are in ``mnist_transfer_runs.py``, its report
in ``mnist_transfer_report.py``); everything that fixes *what* is measured lives here, so the
numbers of a run are determined by this file, ``--quick`` and ``--seed``.
"""
import math

import numpy as np

from nnscratch.data import load_mnist, per_class_subset, prepare_images, subset_by_labels

# Why keras_transfer_net and not the seed's Net (section 4.2)? Same structure (conv 3x3, conv
# 3x3, max-pool 2, dropout .25, dense 128, dropout .5, dense), but its second convolution has
# 32 output channels instead of 64. That convolution is almost all of the compute, so the network
# costs about 4x fewer FLOPs than the seed's Net (32x32 instead of 32x64 channel pairs, and fc1
# takes 4,608 inputs instead of 9,216). Stage 2 trains two dozen networks; with the seed's Net
# the study would not fit in a few minutes on two cores. It is also the network of Keras's
# mnist_transfer_cnn, whose published numbers we compare against.
DIGITS_PRETRAIN = [0, 1, 2, 3, 4]   # task A: the "large data set" of the pre-training
DIGITS_TARGET = [5, 6, 7, 8, 9]     # task B: the new task (relabelled 0..4)
NUM_CLASSES = 5

# Layer names of keras_transfer_net. The body (what transfer learning reuses) is the two
# convolutions; the head is the dense part.
BODY = ("conv1", "conv2")
HEAD = ("fc1", "fc2")
# Where the cached features are taken: the output of the max-pool, i.e. the input of
# dropout1. In eval mode and in training mode alike, everything before dropout1 is
# deterministic (conv, relu, conv, relu, pool), so training the rest of the network
# (dropout1 -> flatten -> fc1 -> relu -> dropout2 -> fc2) on cached pool outputs is *the same
# computation* as training the whole network with a frozen body, minus the repeated body forward.
FEATURE_CUT = "dropout1"

# Inputs: the seed's transforms.ToTensor() + Normalize((0.5,), (0.5,)): (x / 255 - 0.5) / 0.5.
TRANSFORM = prepare_images

MOMENTUM = 0.9
EVAL_BATCH = 500  # the evaluation batch size changes no result (eval mode), only the speed

# Stage 2 is measured in optimization *steps*, not epochs. An epoch of 50 images (10 labels per
# class) is one mini-batch, an epoch of all ~29,400 images is 460 of them: a fixed number of epochs
# would give the small budgets almost no training and the large ones a lot. Instead each budget
# gets a fixed number of steps, growing slowly with the budget, so that a small subset is seen
# many times and the whole training set a few times. In every run the learning rate drops tenfold
# for the last quarter of the steps (see schedule()). Per strategy:
#
# * scratch: the baseline gets the most full-cost steps (two epochs with all labels: with one,
#   it is still undertrained and would make transfer look better than it is);
# * feature extraction: a step on cached features costs a fraction of a full step (only the
#   dense layers run; the script measures the speed-up), so it gets more steps, and larger
#   batches (its accuracy stops improving after ~6 epochs of all labels: more would not help);
# * fine-tuning: phase 2 starts from the feature-extraction model (body pre-trained, head already
#   fitted), so half the scratch steps or fewer suffice (and the study fits in a few minutes).
#
# Sizes of the default run, planned from the measured throughput of keras_transfer_net on two
# idle cores (cython backend): ~1,150 training images/s at batch 64, ~1,290 at batch 128,
# ~2,200-3,500 images/s forward only (evaluation, feature extraction), ~11,000 images/s for a
# training step of the head on cached features. Pre-training (3 epochs of 30,596 images at batch
# 128) takes ~35-70 s, stage 2 ~60-150 s: 2-4 minutes in all, more on a busy machine.
DEFAULT = {
    "pretrain": {"epochs": 3, "batch_size": 128, "lr": 0.05, "lr_milestones": [2], "lr_drop": 0.1,
                 "train_limit": None, "test_limit": None},
    "target": {"train_per_class": None, "test_limit": None},   # pool of 5-9 training images: all
    "budgets": [10, 100, 1000, None],                          # labels per class; None = all
    "seeds": {10: 3, 100: 3, 1000: 1, None: 1},                # subsets drawn per budget
    "scratch": {"batch_size": 64, "lr": 0.02, "steps": {10: 60, 100: 100, 1000: 200, None: 920}},
    "feature_extraction": {"batch_size": 128, "lr": 0.05, "steps": {10: 100, 100: 200, 1000: 300, None: 1380}},
    "fine_tuning": {"batch_size": 64, "lr": 0.01, "body_lr": 0.001, "steps": {10: 30, 100: 50, 1000: 100, None: 150}},
    "lr_drop_at": 0.75,      # fraction of the steps after which the learning rate is divided by 10
    "lr_drop": 0.1,
    "speedup_images": 2000,  # one epoch over this many images, through the frozen body vs cached
}

# --quick: every code path (training, save/load, caching, plots, JSON) on tiny subsets, for CI.
QUICK = {
    "pretrain": {"epochs": 1, "batch_size": 32, "lr": 0.02, "lr_milestones": [], "lr_drop": 0.1,
                 "train_limit": 768, "test_limit": 300},
    "target": {"train_per_class": 100, "test_limit": 300},
    "budgets": [10, 100],
    "seeds": {10: 1, 100: 1},
    "scratch": {"batch_size": 64, "lr": 0.02, "steps": {10: 8, 100: 8}},
    "feature_extraction": {"batch_size": 128, "lr": 0.05, "steps": {10: 16, 100: 16}},
    "fine_tuning": {"batch_size": 64, "lr": 0.01, "body_lr": 0.001, "steps": {10: 4, 100: 4}},
    "lr_drop_at": 0.75,
    "lr_drop": 0.1,
    "speedup_images": 256,
}

STRATEGIES = ("scratch", "feature_extraction", "fine_tuning")
LABELS = {"scratch": "from scratch", "feature_extraction": "feature extraction (frozen conv)",
          "fine_tuning": "fine-tuning (body lr / 10)"}

# Targets of the default run, checked at the end, and the published numbers they come from.
TARGET_PRETRAIN = 0.997   # Keras mnist_transfer_cnn: 99.8 % on 0-4 after pre-training
TARGET_FROZEN_ALL = 0.992  # Keras: 99.2 % on 5-9 with frozen convolutions and all labels
TARGET_GAIN_10 = 0.03     # a PyTorch replication: 89.5 % (transfer) vs 84.7 % (scratch) at 10 labels/class
TARGET_TIME = 300.0       # seconds, 2 cores


def config(quick):
    return QUICK if quick else DEFAULT


def budget_key(per_class):
    return "all" if per_class is None else str(per_class)


def schedule(steps, drop_at):
    """How a run of `steps` optimizer steps, whose learning rate drops after ``int(drop_at * steps)``
    of them, is given to :func:`nnscratch.fit`: ``(epochs, steps_per_epoch, milestones)``.

    fit steps its scheduler after every epoch, so the drop must fall between two epochs. An
    "epoch" here is therefore a fixed number of steps (Keras's ``steps_per_epoch``: the runs cycle
    over seeded shuffles of their subset), the largest that divides both the run and its drop
    point, and the drop is ``MultiStepLR(milestones=[drop // steps_per_epoch])``. E.g. 60 steps,
    drop after 45: 4 epochs of 15 steps, milestone 3; 50 steps, drop after 37: 50 epochs of one step.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"mnist_transfer protocol: a run needs at least one step, got {steps}")
    drop = int(drop_at * steps)
    per_epoch = math.gcd(steps, drop)  # gcd(steps, 0) = steps: a drop before the first step
    return steps // per_epoch, per_epoch, [drop // per_epoch]


def run_seed(base_seed, budget, subset):
    """One integer seed per (base seed, subset, budget): weights, dropout masks and shuffles."""
    return 1_000_000 * base_seed + 10_000 * subset + (0 if budget is None else budget)


def limit(images, labels, n, seed):
    """The first ``n`` samples of a seeded shuffle (all of them, in order, when ``n`` is None)."""
    if n is None or n >= len(labels):
        return images, labels
    index = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return images[index], labels[index]


def load_tasks(cfg, seed):
    """Task A (digits 0-4) and task B (digits 5-9 relabelled 0-4), each ``((images, labels) train,
    (images, labels) test)``, cut down as `cfg` says (quick mode)."""
    (train_images, train_labels), (test_images, test_labels) = load_mnist()
    train_a = subset_by_labels(train_images, train_labels, DIGITS_PRETRAIN)
    test_a = subset_by_labels(test_images, test_labels, DIGITS_PRETRAIN)
    train_b = subset_by_labels(train_images, train_labels, DIGITS_TARGET)  # remap: 5..9 -> 0..4
    test_b = subset_by_labels(test_images, test_labels, DIGITS_TARGET)
    train_a = limit(*train_a, cfg["pretrain"]["train_limit"], seed)
    test_a = limit(*test_a, cfg["pretrain"]["test_limit"], seed)
    if cfg["target"]["train_per_class"] is not None:
        train_b = per_class_subset(*train_b, cfg["target"]["train_per_class"], seed=seed)
    test_b = limit(*test_b, cfg["target"]["test_limit"], seed)
    return (train_a, test_a), (train_b, test_b)


def subsets(cfg, labels, seed):
    """Every (budget, subset number, indices into the task-B training pool) of the protocol. Indices,
    so that the images and their cached features stay paired."""
    pool = np.arange(len(labels))
    for per_class in cfg["budgets"]:
        for s in range(cfg["seeds"][per_class]):
            index = pool if per_class is None else per_class_subset(pool, labels, per_class, seed=1000 * seed + s)[0]
            yield per_class, s, index


def describe(cfg, sizes):
    """The protocol as JSON-ready data (budgets as strings)."""
    return {
        "budgets": [budget_key(b) for b in cfg["budgets"]],
        "seeds": {budget_key(b): n for b, n in cfg["seeds"].items()},
        **{strategy: {**cfg[strategy], "steps": {budget_key(b): n for b, n in cfg[strategy]["steps"].items()}}
           for strategy in STRATEGIES},
        "lr_drop_at": cfg["lr_drop_at"], "lr_drop": cfg["lr_drop"], "momentum": MOMENTUM,
        "pretrain": cfg["pretrain"], "feature_cut": FEATURE_CUT, **sizes,
    }

"""Transfer learning on MNIST with nnscratch: pre-training, feature extraction, fine-tuning.

The seed article (section 2.3) names three ways of using a convolutional network trained on one
task for another one. This script runs all three on the protocol of Keras's
``mnist_transfer_cnn`` example and measures what each buys:

* **Pre-training** (stage 1). Train a small convnet on the digits 0-4 (30,596 images) and save
  its weights with :func:`nnscratch.transfer.save_weights`. This is the article's "large data
  set"; its first-layer filters are saved as a picture.
* **Feature extraction** (stage 2, strategy b). The new task is the digits 5-9, relabelled
  0-4. Load the pre-trained network (:func:`~nnscratch.transfer.load_model`), replace its output
  layer by a fresh 5-class one (:func:`~nnscratch.transfer.replace_head`), freeze the
  convolutions (:func:`~nnscratch.transfer.freeze`) and use them as a fixed feature extractor:
  every image goes through the frozen body *once* (:func:`~nnscratch.transfer.extract_features`),
  the features are cached, and only the dense part (fc1, fc2) is trained, on the cached
  features. The script measures how much faster that is than pushing every batch through the
  frozen body again.
* **Fine-tuning** (strategy c). Continue from the feature-extraction model (pre-trained body,
  head already fitted: phase 1 of :func:`~nnscratch.transfer.fine_tune`), unfreeze everything
  and keep training with a ten times lower learning rate for the convolutions than for the
  dense layers (:func:`~nnscratch.transfer.param_groups`), so the pre-trained features are
  adjusted, not overwritten.
* **From scratch** (strategy a), the baseline: the same network with random weights, trained
  on the same 5-9 images.

Protocol of stage 2: for label budgets of 10, 100, 1000 and all (~5,900) training images per
class, draw a class-balanced subset of the 5-9 training set (three seeds for the small, noisy
budgets), train each strategy on it for a fixed number of optimization steps (see DEFAULT
below for why steps and not epochs), and measure the accuracy on the *whole* 5-9 test set
(4,861 images) and the wall time. The results are printed as a table and plotted (accuracy
versus labels per class, log scale). Transfer helps most when labels are scarce; its lead
shrinks as labels grow, and the script says plainly where it stops helping.

Run from the repository root (MNIST is read offline from ``data/mnist/``)::

    python examples/mnist_transfer.py                          # the full study, about 4 minutes on 2 cores
    python examples/mnist_transfer.py --quick                  # every code path in seconds (CI)
    python examples/mnist_transfer.py --json run.json --out runs/mnist_transfer/
    python examples/mnist_transfer.py --weights runs/mnist_transfer/pretrained_0-4.safetensors   # skip stage 1

Outputs in ``--out`` (default ``runs/mnist_transfer/``): ``pretrained_0-4.safetensors``
(stage-1 weights; :func:`nnscratch.transfer.load_model` rebuilds the network from it),
``accuracy_vs_labels.png`` and ``conv1_filters.png``.
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import nnscratch as nn
from nnscratch import malloc, plot, transfer
from nnscratch.data import DataLoader, load_mnist, per_class_subset, prepare_images, subset_by_labels
from nnscratch.models import keras_transfer_net

# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------
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
# for the last quarter of the steps. Per strategy:
#
# * scratch: the baseline gets the most full-cost steps (two epochs with all labels: with one,
#   it is still undertrained and would make transfer look better than it is);
# * feature extraction: a step on cached features costs a fraction of a full step (only the
#   dense layers run; the script measures the speed-up), so it gets more steps, and larger
#   batches (its accuracy stops improving after ~6 epochs of all labels: more would not help);
# * fine-tuning: phase 2 starts from the feature-extraction model (body pre-trained, head already
#   fitted), so half the scratch steps or fewer suffice (and the study fits in ~4 minutes).
#
# Sizes of the default run, planned from the measured throughput of keras_transfer_net on two
# idle cores (cython backend): ~1,150 training images/s at batch 64, ~1,290 at batch 128,
# ~2,200-3,500 images/s forward only (evaluation, feature extraction), ~11,000 images/s for a
# training step of the head on cached features. Pre-training (3 epochs of 30,596 images at batch
# 128) takes ~70 s, stage 2 ~150 s: under 4 minutes in all, more on a busy machine.
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


def budget_key(per_class):
    return "all" if per_class is None else str(per_class)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny subsets, one seed, budgets 10 and 100, few steps: every code path in seconds (CI)")
    parser.add_argument("--out", type=Path, default=Path("runs/mnist_transfer"), metavar="DIR",
                        help="directory for the weights and plots (created; default runs/mnist_transfer/)")
    parser.add_argument("--weights", type=Path, metavar="PATH",
                        help="reuse these pre-trained weights (a transfer.save_weights file) and skip stage 1")
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="write every figure (accuracies, times, speed-up, targets) as JSON")
    parser.add_argument("--seed", type=int, default=0, help="base seed of weights, dropout, shuffles and subsets")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def limit(images, labels, n, seed):
    """The first ``n`` samples of a seeded shuffle (all of them, in order, when ``n`` is None)."""
    if n is None or n >= len(labels):
        return images, labels
    index = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return images[index], labels[index]


def train_for_steps(model, optimizer, inputs, labels, steps, batch_size, seed, transform=None, lr_drop_at=0.75):
    """Exactly ``steps`` mini-batch steps of the seed's training loop (section 4.3), cycling over
    seeded shuffles of ``inputs``; the learning rate of every parameter group is divided by 10
    after ``lr_drop_at * steps`` steps."""
    loader = DataLoader(inputs, labels, batch_size=min(batch_size, len(labels)), shuffle=True,
                        seed=seed, transform=transform)
    criterion = nn.CrossEntropyLoss()
    drop_step = int(lr_drop_at * steps)
    model.train()
    step = 0
    while step < steps:
        for x, y in loader:  # one pass = one epoch, in a new order each time
            if step == drop_step:
                for group in optimizer.param_groups:
                    group["lr"] *= 0.1
            loss = criterion(model(x), y)           # outputs = net(inputs); loss = criterion(outputs, labels)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training diverged at step {step}: loss {loss}")
            optimizer.zero_grad()                   # optimizer.zero_grad()
            model.backward(criterion.backward(), need_input_grad=False)  # loss.backward()
            optimizer.step()                        # optimizer.step()
            step += 1
            if step == steps:
                break
    return steps


def accuracy(model, inputs, labels, transform=None):
    loader = DataLoader(inputs, labels, batch_size=EVAL_BATCH, transform=transform)
    return nn.evaluate(model, None, loader)["accuracy"]


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def mean_sd(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


# ---------------------------------------------------------------------------------------------
# Stage 1: pre-training on the digits 0-4
# ---------------------------------------------------------------------------------------------

def pretrain(train, cfg, seed):
    """Keras's mnist_transfer_cnn stage 1 with the seed's optimizer: SGD, momentum 0.9,
    cross-entropy on logits; the learning rate drops tenfold for the last epoch."""
    nn.manual_seed([seed, 1])
    model = keras_transfer_net(num_classes=NUM_CLASSES)
    optimizer = nn.SGD(model.parameters(), lr=cfg["lr"], momentum=MOMENTUM)
    loader = DataLoader(*train, batch_size=cfg["batch_size"], shuffle=True, seed=seed, transform=TRANSFORM)

    # lr × lr_drop after each milestone epoch (PyTorch's MultiStepLR: fit steps it after every epoch)
    scheduler = nn.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg["lr_milestones"], gamma=cfg["lr_drop"])

    def report(epoch, history):  # called after each epoch (counting from 1)
        print(f"  epoch {epoch}/{cfg['epochs']}: train loss {history.train_loss[-1]:.4f}, "
              f"train accuracy {history.train_accuracy[-1]:.2%} ({history.epoch_time[-1]:.0f} s)", flush=True)

    history = nn.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs=cfg["epochs"],
                     scheduler=scheduler, progress=False, callback=report)
    return model, history


# ---------------------------------------------------------------------------------------------
# Stage 2: the three strategies on the digits 5-9
# ---------------------------------------------------------------------------------------------

def pretrained_model(weights_path):
    """The pre-trained network with a fresh 5-class output layer (task B's classes are new:
    the old fc2 rows mean "0".."4", nothing useful for "5".."9")."""
    model = transfer.load_model(weights_path)
    transfer.replace_head(model, NUM_CLASSES)
    return model


def run_scratch(train, test, per_class, cfg, run_seed):
    """(a) The baseline: a freshly initialized keras_transfer_net trained on the subset."""
    opts = cfg["scratch"]
    nn.manual_seed(run_seed)
    model = keras_transfer_net(num_classes=NUM_CLASSES)
    optimizer = nn.SGD(model.parameters(), lr=opts["lr"], momentum=MOMENTUM)
    steps = train_for_steps(model, optimizer, *train, opts["steps"][per_class], opts["batch_size"], run_seed,
                            TRANSFORM, cfg["lr_drop_at"])
    return accuracy(model, *test, transform=TRANSFORM), steps


def run_feature_extraction(weights_path, features, labels, test_features, test_labels, per_class, cfg, run_seed,
                           show_summary=False):
    """(b) Pre-trained body frozen; the head (fc1, new fc2) trained on cached features. Returns the
    model (whose fc1/fc2 are the trained head), its optimizer, the accuracy and the steps."""
    opts = cfg["feature_extraction"]
    nn.manual_seed(run_seed)
    model = pretrained_model(weights_path)
    transfer.freeze(model, list(BODY))
    head = model[FEATURE_CUT:]  # dropout1 ... fc2, sharing its layers with `model`
    optimizer = nn.SGD(trainable(model), lr=opts["lr"], momentum=MOMENTUM)  # fc1 and fc2 only
    if show_summary:  # the model as the optimizer sees it: the frozen conv layers are not in it
        print("\n  transfer.summary of the feature-extraction model and its optimizer:")
        print("    " + transfer.summary(model, optimizer).replace("\n", "\n    "))
    steps = train_for_steps(head, optimizer, features, labels, opts["steps"][per_class], opts["batch_size"],
                            run_seed, None, cfg["lr_drop_at"])
    # The head is evaluated on the cached test features: the same outputs as the whole model on
    # the test images (main() checks this once), without running the body again.
    return model, optimizer, accuracy(head, test_features, test_labels), steps


def run_fine_tuning(model, train, test, per_class, cfg, run_seed):
    """(c) Phase 2 of transfer.fine_tune, continuing from the feature-extraction model (phase 1:
    body frozen, head trained): unfreeze everything and train the body at a ten times lower
    learning rate than the head (transfer.param_groups gives SGD the two groups)."""
    opts = cfg["fine_tuning"]
    nn.manual_seed(run_seed)
    transfer.unfreeze(model)
    groups = transfer.param_groups(model, lr=opts["lr"], body_lr=opts["body_lr"], head=HEAD)
    optimizer = nn.SGD(groups, lr=opts["lr"], momentum=MOMENTUM)
    steps = train_for_steps(model, optimizer, *train, opts["steps"][per_class], opts["batch_size"], run_seed,
                            TRANSFORM, cfg["lr_drop_at"])
    return accuracy(model, *test, transform=TRANSFORM), steps


def measure_cache_speedup(weights_path, images, labels, features, cfg, seed):
    """Wall time of one epoch of feature-extraction training done two ways: pushing every batch
    through the frozen body (conv1, conv2 forward at every step), or on the cached features.
    Both run the same computation on the same batches; only the repeated body forward differs."""
    opts = cfg["feature_extraction"]
    n = min(cfg["speedup_images"], len(labels))
    steps = math.ceil(n / opts["batch_size"])  # one epoch
    times = {}
    for way in ("frozen_body", "cached"):
        nn.manual_seed(seed)
        model = pretrained_model(weights_path)
        transfer.freeze(model, list(BODY))
        optimizer = nn.SGD(trainable(model), lr=opts["lr"], momentum=MOMENTUM)
        started = time.perf_counter()
        if way == "frozen_body":
            train_for_steps(model, optimizer, images[:n], labels[:n], steps, opts["batch_size"], seed, TRANSFORM)
        else:
            train_for_steps(model[FEATURE_CUT:], optimizer, features[:n], labels[:n], steps, opts["batch_size"], seed)
        times[way] = time.perf_counter() - started
    return n, times


def plot_accuracy(runs, budgets, per_class_all, path):
    """Accuracy vs labels per class, one curve per strategy, mean ± sd over the seeds of each budget."""
    curves = {LABELS[strategy]: [[r["accuracy"] for r in runs
                                  if r["strategy"] == strategy and r["labels_per_class"] == budget_key(b)]
                                 for b in budgets]
              for strategy in STRATEGIES}
    fig = plot.accuracy_vs_labels(
        [per_class_all if b is None else b for b in budgets], curves,
        xticklabels=[f"all\n(~{per_class_all:,})" if b is None else str(b) for b in budgets],
        title="Transfer from digits 0-4 to 5-9 (mean ± sd over seeds)",
        xlabel="labelled training images per class (digits 5-9)", ylabel="test accuracy on digits 5-9 (%)")
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = QUICK if args.quick else DEFAULT
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"nnscratch {nn.__version__}, backend {nn.backend()}, {nn.get_num_threads()} threads"
          f"{', QUICK mode (tiny subsets: accuracies are not meaningful)' if args.quick else ''}")

    # ---- data: task A = digits 0-4, task B = digits 5-9 relabelled 0-4 --------------------------
    (train_images, train_labels), (test_images, test_labels) = load_mnist()
    train_a = subset_by_labels(train_images, train_labels, DIGITS_PRETRAIN)
    test_a = subset_by_labels(test_images, test_labels, DIGITS_PRETRAIN)
    train_b = subset_by_labels(train_images, train_labels, DIGITS_TARGET)  # remap: 5..9 -> 0..4
    test_b = subset_by_labels(test_images, test_labels, DIGITS_TARGET)
    train_a = limit(*train_a, cfg["pretrain"]["train_limit"], args.seed)
    test_a = limit(*test_a, cfg["pretrain"]["test_limit"], args.seed)
    if cfg["target"]["train_per_class"] is not None:
        train_b = per_class_subset(*train_b, cfg["target"]["train_per_class"], seed=args.seed)
    test_b = limit(*test_b, cfg["target"]["test_limit"], args.seed)
    print(f"task A (digits 0-4): {len(train_a[1])} training, {len(test_a[1])} test images; "
          f"task B (digits 5-9): {len(train_b[1])} training, {len(test_b[1])} test images")

    # ---- stage 1: pre-training on 0-4 (or reuse --weights) ---------------------------------------
    stage1 = {}
    if args.weights is not None:
        print(f"\n== Stage 1: reusing pre-trained weights {args.weights} ==")
        weights_path = args.weights
        t0 = time.perf_counter()
        model_a = transfer.load_model(weights_path)
        stage1.update(reused=True, train_time=0.0, load_time=time.perf_counter() - t0)
    else:
        print(f"\n== Stage 1: pre-training keras_transfer_net on digits 0-4 "
              f"({cfg['pretrain']['epochs']} epochs, SGD lr {cfg['pretrain']['lr']}, momentum {MOMENTUM}) ==")
        t0 = time.perf_counter()
        model_a, history = pretrain(train_a, cfg["pretrain"], args.seed)
        stage1.update(reused=False, train_time=time.perf_counter() - t0, epochs=cfg["pretrain"]["epochs"],
                      history=history.as_dict())
        stage1["test_accuracy"] = accuracy(model_a, *test_a, transform=TRANSFORM)
        # Weights + architecture + what they were trained on, in one safetensors file (no pickle):
        # transfer.load_model(path) rebuilds the network from it alone.
        weights_path = args.out / "pretrained_0-4.safetensors"
        transfer.save_weights(model_a, weights_path, input_shape=(1, 28, 28), metadata={
            "task": "MNIST digits 0-4", "digits": DIGITS_PRETRAIN, "epochs": cfg["pretrain"]["epochs"],
            "lr": cfg["pretrain"]["lr"], "momentum": MOMENTUM, "seed": args.seed, "quick": args.quick,
            "test_accuracy": stage1["test_accuracy"]})
        print(f"  saved {weights_path}")
    if "test_accuracy" not in stage1:
        stage1["test_accuracy"] = accuracy(model_a, *test_a, transform=TRANSFORM)
    stage1["weights"] = str(weights_path)
    print(f"  test accuracy on digits 0-4: {stage1['test_accuracy']:.2%} ({len(test_a[1])} images; "
          f"Keras reports 99.8 %)")
    filters_png = args.out / "conv1_filters.png"
    plot.filters(model_a.conv1, title="conv1 filters after pre-training on digits 0-4").savefig(filters_png, dpi=100)
    print(f"  conv1 filters: {filters_png}")
    del model_a

    # ---- stage 2, once: cache the frozen body's features of every 5-9 image ---------------------
    # The body's weights never change in feature extraction, so its output for an image never
    # changes either: compute it once for the whole training pool and the test set.
    print("\n== Stage 2: digits 5-9, from scratch vs feature extraction vs fine-tuning ==")
    t0 = time.perf_counter()
    extractor = transfer.load_model(weights_path)
    features_b = transfer.extract_features(extractor, TRANSFORM(train_b[0]), before=FEATURE_CUT, batch_size=EVAL_BATCH)
    test_features_b = transfer.extract_features(extractor, TRANSFORM(test_b[0]), before=FEATURE_CUT, batch_size=EVAL_BATCH)
    extract_time = time.perf_counter() - t0
    del extractor
    print(f"  features cached: {features_b.shape[0] + test_features_b.shape[0]} images -> "
          f"{features_b.shape[1:]} each (the max-pool output), "
          f"{extract_time:.1f} s, {(features_b.nbytes + test_features_b.nbytes) / 2**20:.0f} MiB")

    n_speed, times = measure_cache_speedup(weights_path, *train_b, features_b, cfg, args.seed)
    speedup = times["frozen_body"] / times["cached"]
    print(f"  one epoch of head training on {n_speed} images: {times['frozen_body']:.2f} s through the frozen body, "
          f"{times['cached']:.2f} s on cached features -> {speedup:.1f}x faster")
    print(f"  (caching costs one forward pass, {extract_time:.1f} s for all {len(train_b[1]) + len(test_b[1])} images, "
          f"paid once for every budget, seed and epoch below)")

    runs = []
    cache_check = None
    # Per-class subsets are drawn as indices, so the images and their cached features stay paired.
    pool_index = np.arange(len(train_b[1]))
    for per_class in cfg["budgets"]:
        for s in range(cfg["seeds"][per_class]):
            if per_class is None:
                index = pool_index
            else:
                index, _ = per_class_subset(pool_index, train_b[1], per_class, seed=1000 * args.seed + s)
            train = (train_b[0][index], train_b[1][index])
            # One integer seed per (base seed, subset, budget): weights, dropout masks and shuffles.
            run_seed = 1_000_000 * args.seed + 10_000 * s + (0 if per_class is None else per_class)
            key = budget_key(per_class)

            # (a) from scratch
            t0 = time.perf_counter()
            acc, taken = run_scratch(train, test_b, per_class, cfg, run_seed)
            runs.append(dict(strategy="scratch", labels_per_class=key, seed=s, train_size=len(index),
                             steps=taken, accuracy=acc, time=time.perf_counter() - t0))

            # (b) feature extraction: frozen pre-trained body, head trained on cached features
            t0 = time.perf_counter()
            model, optimizer, acc, taken = run_feature_extraction(
                weights_path, features_b[index], train[1], test_features_b, test_b[1], per_class, cfg, run_seed,
                show_summary=cache_check is None)
            fe_time = time.perf_counter() - t0
            runs.append(dict(strategy="feature_extraction", labels_per_class=key, seed=s, train_size=len(index),
                             steps=taken, accuracy=acc, time=fe_time))
            if cache_check is None:
                # Once, proof that the head trained on cached features is the network's head:
                # plugged back behind the frozen body, the whole model scores the same.
                whole = accuracy(model, *test_b, transform=TRANSFORM)
                cache_check = {"head_on_cached_features": acc, "whole_model_on_images": whole}
                print(f"  check: head on cached test features {acc:.2%}, whole model on the test images "
                      f"{whole:.2%}{'' if whole == acc else '  <-- MISMATCH'}\n")

            # (c) fine-tuning: continue from (b)'s model, everything trainable, body lr / 10
            t0 = time.perf_counter()
            acc, taken = run_fine_tuning(model, train, test_b, per_class, cfg, run_seed)
            runs.append(dict(strategy="fine_tuning", labels_per_class=key, seed=s, train_size=len(index),
                             steps=taken, accuracy=acc, time=fe_time + time.perf_counter() - t0))
            line = ", ".join(f"{r['strategy']} {r['accuracy']:.2%} ({r['time']:.1f} s)" for r in runs[-3:])
            print(f"  {key:>4} labels/class, seed {s}: {line}", flush=True)

    # ---- results ----------------------------------------------------------------------------
    table = {strategy: {} for strategy in STRATEGIES}
    for strategy in STRATEGIES:
        for per_class in cfg["budgets"]:
            key = budget_key(per_class)
            chosen = [r for r in runs if r["strategy"] == strategy and r["labels_per_class"] == key]
            mean, sd = mean_sd([r["accuracy"] for r in chosen])
            table[strategy][key] = dict(mean=mean, sd=sd, n=len(chosen),
                                        time_mean=float(np.mean([r["time"] for r in chosen])),
                                        steps=chosen[0]["steps"], train_size=chosen[0]["train_size"])

    print("\nTest accuracy on digits 5-9 (mean ± sd over seeds) and wall time per run:")
    header = f"{'labels/class':>14} | " + " | ".join(f"{LABELS[s]:^32}" for s in STRATEGIES)
    print(header)
    print("-" * len(header))
    for per_class in cfg["budgets"]:
        key = budget_key(per_class)
        n = table["scratch"][key]["n"]
        cells = []
        for strategy in STRATEGIES:
            cell = table[strategy][key]
            sd = f" ± {100 * cell['sd']:4.1f}" if n > 1 else " " * 7
            cells.append(f"{100 * cell['mean']:6.2f}{sd} %  {cell['time_mean']:6.1f} s".center(32))
        label = f"{key} ({n} seed{'s' * (n > 1)})"
        print(f"{label:>14} | " + " | ".join(cells))
    print("(fine-tuning continues from the feature-extraction model: its time includes that run; "
          f"the one-off feature caching, {extract_time:.1f} s, is not in any row)")

    # Where transfer helps, and -- said plainly -- where it does not.
    print("\nWhere does transfer help? (differences in percentage points of test accuracy)")
    for per_class in cfg["budgets"]:
        key = budget_key(per_class)
        acc = {strategy: 100 * table[strategy][key]["mean"] for strategy in STRATEGIES}
        best = max(("feature_extraction", "fine_tuning"), key=acc.get)
        gain = acc[best] - acc["scratch"]
        versus = f"{LABELS[best]} {acc[best]:.2f} % vs scratch {acc['scratch']:.2f} %"
        if gain >= 2.0:
            verdict = f"transfer helps clearly, +{gain:.1f} points ({versus})"
        elif gain >= 0.3:
            verdict = f"transfer helps only a little, +{gain:.2f} points ({versus})"
        elif gain > -0.3:
            verdict = f"transfer does NOT help: roughly even ({versus})"
        else:
            verdict = f"transfer does NOT help: scratch is {-gain:.2f} points better ({versus})"
        extra = acc["fine_tuning"] - acc["feature_extraction"]
        ratio = table["fine_tuning"][key]["time_mean"] / max(table["feature_extraction"][key]["time_mean"], 1e-9)
        if extra < 0.3:
            verdict += (f"; fine-tuning adds {'nothing' if extra < 0.05 else 'little'} over feature extraction "
                        f"({extra:+.2f} points) at {ratio:.1f}x its time")
        print(f"  {key:>4} labels/class: {verdict}")

    plot_png = args.out / "accuracy_vs_labels.png"
    per_class_all = round(len(train_b[1]) / NUM_CLASSES)
    plot_accuracy(runs, cfg["budgets"], per_class_all, plot_png)
    print(f"\naccuracy plot: {plot_png}")

    total_time = time.perf_counter() - started

    # ---- targets (default run) --------------------------------------------------------------
    targets = {"pretrain_accuracy": dict(value=stage1["test_accuracy"], threshold=TARGET_PRETRAIN)}
    if "all" in table["feature_extraction"]:
        targets["frozen_conv_all_labels"] = dict(value=table["feature_extraction"]["all"]["mean"],
                                                 threshold=TARGET_FROZEN_ALL)
    if "10" in table["scratch"]:
        best10 = max(table["feature_extraction"]["10"]["mean"], table["fine_tuning"]["10"]["mean"])
        targets["gain_at_10_labels"] = dict(value=best10 - table["scratch"]["10"]["mean"], threshold=TARGET_GAIN_10)
    targets["total_time"] = dict(value=total_time, threshold=TARGET_TIME, below=True)
    for target in targets.values():
        below = target.pop("below", False)
        target["met"] = bool(target["value"] <= target["threshold"] if below else target["value"] >= target["threshold"])
    print("\nTargets" + (" (quick mode: not expected to be met)" if args.quick else "") + ":")
    for name, target in targets.items():
        print(f"  {name:24} {target['value']:.4f} (target {'<=' if name == 'total_time' else '>='} "
              f"{target['threshold']}): {'met' if target['met'] else 'NOT met'}")

    results = {
        "mode": "quick" if args.quick else "default",
        "backend": nn.backend(),
        "threads": nn.get_num_threads(),
        "seed": args.seed,
        "protocol": {
            "budgets": [budget_key(b) for b in cfg["budgets"]],
            "seeds": {budget_key(b): n for b, n in cfg["seeds"].items()},
            **{strategy: {**cfg[strategy], "steps": {budget_key(b): n for b, n in cfg[strategy]["steps"].items()}}
               for strategy in STRATEGIES},
            "lr_drop_at": cfg["lr_drop_at"], "momentum": MOMENTUM,
            "pretrain": cfg["pretrain"], "feature_cut": FEATURE_CUT,
            "train_sizes": {"pretrain": len(train_a[1]), "target_pool": len(train_b[1])},
            "test_sizes": {"pretrain": len(test_a[1]), "target": len(test_b[1])},
        },
        "stage1": stage1,
        "feature_cache": {"extract_time": extract_time, "images": int(len(train_b[1]) + len(test_b[1])),
                          "feature_shape": list(features_b.shape[1:]), "speedup_images": n_speed,
                          "epoch_time_frozen_body": times["frozen_body"], "epoch_time_cached": times["cached"],
                          "speedup": speedup, "check": cache_check},
        "runs": runs,
        "table": table,
        "targets": targets,
        "plots": {"accuracy": str(plot_png), "filters": str(filters_png)},
        "total_time": total_time,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results: {args.json}")
    print(f"\ntotal wall time: {total_time:.1f} s ({total_time / 60:.1f} min)")
    return results


if __name__ == "__main__":
    # a training script may keep freed memory for reuse (fewer page faults per step); a library
    # import never does this, since it holds for the whole process: see nnscratch/malloc.py
    malloc.keep_freed_memory()
    main()

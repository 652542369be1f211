"""The runs of examples/mnist_transfer.py: pre-training on digits 0-4, then on 5-9 from scratch,
feature extraction (on cached features) and fine-tuning.

Part of the ``mnist_transfer`` example; the protocol (sizes, steps, seeds) is in
``mnist_transfer_protocol.py``. Every run trains through the library: :func:`nnscratch.fit`
with a ``MultiStepLR`` for scratch and pre-training, :func:`nnscratch.transfer.fine_tune` for
feature extraction (its phase 1, the head alone) and fine-tuning (its phase 2, everything at
discriminative learning rates).
"""
import itertools
import time

from mnist_transfer_protocol import (
    BODY, DIGITS_PRETRAIN, EVAL_BATCH, FEATURE_CUT, HEAD, MOMENTUM, NUM_CLASSES, TRANSFORM, budget_key, run_seed,
    schedule, subsets,
)

import nnscratch as nn
from nnscratch import transfer
from nnscratch.data import DataLoader
from nnscratch.models import keras_transfer_net
from nnscratch.optim.lr_scheduler import MultiStepLR


class StepsPerEpoch:
    """Epochs of exactly `steps` mini-batches of `loader`, cycling over the loader's epochs (Keras's
    ``steps_per_epoch``): fit's epochs follow one another through the endless sequence of the
    loader's epoch 0, epoch 1, ... (each a new seeded shuffle), wherever an epoch of fit ends."""

    def __init__(self, loader, steps):
        self.loader, self.steps = loader, int(steps)
        self._batches = itertools.chain.from_iterable(iter(self.loader) for _ in itertools.count())

    def __len__(self):
        return self.steps

    def __iter__(self):
        return itertools.islice(self._batches, self.steps)


def accuracy(model, inputs, labels, transform=None):
    loader = DataLoader(inputs, labels, batch_size=EVAL_BATCH, transform=transform)
    return nn.evaluate(model, None, loader)["accuracy"]


def stage2_batches(inputs, labels, opts, per_class, cfg, seed, transform=None):
    """The training batches of one stage-2 run as fit sees them: ``(loader, epochs, milestones)``,
    ``epochs * len(loader)`` being the protocol's steps and the milestone its learning-rate drop."""
    epochs, per_epoch, milestones = schedule(opts["steps"][per_class], cfg["lr_drop_at"])
    loader = DataLoader(inputs, labels, batch_size=min(opts["batch_size"], len(labels)), shuffle=True, seed=seed,
                        transform=transform)
    return StepsPerEpoch(loader, per_epoch), epochs, milestones


def steps(history):
    """Optimizer steps a run took (from its History)."""
    return int(sum(history.epoch_batches))


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
    scheduler = MultiStepLR(optimizer, milestones=cfg["lr_milestones"], gamma=cfg["lr_drop"])

    def report(epoch, history):  # called after each epoch (counting from 1)
        print(f"  epoch {epoch}/{cfg['epochs']}: train loss {history.train_loss[-1]:.4f}, "
              f"train accuracy {history.train_accuracy[-1]:.2%} ({history.epoch_time[-1]:.0f} s)", flush=True)

    history = nn.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs=cfg["epochs"],
                     scheduler=scheduler, progress=False, callback=report)
    return model, history


def stage1(task_a, cfg, args):
    """Pre-train on digits 0-4 and save the weights (or load ``--weights``); returns the model and
    what the report needs: ``reused``, times, ``test_accuracy``, ``weights`` (the file)."""
    train_a, test_a = task_a
    opts = cfg["pretrain"]
    if args.weights is not None:
        print(f"\n== Stage 1: reusing pre-trained weights {args.weights} ==")
        t0 = time.perf_counter()
        model = transfer.load_model(args.weights)
        return model, dict(reused=True, train_time=0.0, load_time=time.perf_counter() - t0,
                           test_accuracy=accuracy(model, *test_a, transform=TRANSFORM), weights=str(args.weights))
    print(f"\n== Stage 1: pre-training keras_transfer_net on digits 0-4 "
          f"({opts['epochs']} epochs, SGD lr {opts['lr']}, momentum {MOMENTUM}) ==")
    t0 = time.perf_counter()
    model, history = pretrain(train_a, opts, args.seed)
    result = dict(reused=False, train_time=time.perf_counter() - t0, epochs=opts["epochs"], history=history.as_dict(),
                  test_accuracy=accuracy(model, *test_a, transform=TRANSFORM))
    # Weights + architecture + what they were trained on, in one safetensors file (no pickle):
    # transfer.load_model(path) rebuilds the network from it alone.
    path = args.out / "pretrained_0-4.safetensors"
    transfer.save_weights(model, path, input_shape=(1, 28, 28), metadata={
        "task": "MNIST digits 0-4", "digits": DIGITS_PRETRAIN, "epochs": opts["epochs"], "lr": opts["lr"],
        "momentum": MOMENTUM, "seed": args.seed, "quick": args.quick, "test_accuracy": result["test_accuracy"]})
    print(f"  saved {path}")
    result["weights"] = str(path)
    return model, result


# ---------------------------------------------------------------------------------------------
# Stage 2: the three strategies on the digits 5-9
# ---------------------------------------------------------------------------------------------

def pretrained_model(weights_path):
    """The pre-trained network with a fresh 5-class output layer (task B's classes are new:
    the old fc2 rows mean "0".."4", nothing useful for "5".."9")."""
    model = transfer.load_model(weights_path)
    transfer.replace_head(model, NUM_CLASSES)
    return model


def train_head(net, loader, epochs, lr, milestones=(), gamma=0.1):
    """Phase 1 of transfer.fine_tune alone (a feature-extraction training): `net`'s fc1 and fc2
    train, anything before them stays frozen. `net` is either the whole model or its part from
    FEATURE_CUT on (then it has no body, and body_lr plays no part)."""
    return transfer.fine_tune(net, nn.CrossEntropyLoss(), loader, head_epochs=epochs, full_epochs=0, lr=lr, body_lr=lr,
                              momentum=MOMENTUM, head=HEAD, head_milestones=milestones, gamma=gamma, progress=False)


def run_scratch(train, test, per_class, cfg, seed):
    """(a) The baseline: a freshly initialized keras_transfer_net trained on the subset."""
    opts = cfg["scratch"]
    nn.manual_seed(seed)
    model = keras_transfer_net(num_classes=NUM_CLASSES)
    optimizer = nn.SGD(model.parameters(), lr=opts["lr"], momentum=MOMENTUM)
    loader, epochs, milestones = stage2_batches(*train, opts, per_class, cfg, seed, TRANSFORM)
    history = nn.fit(model, nn.CrossEntropyLoss(), optimizer, loader, epochs, progress=False,
                     scheduler=MultiStepLR(optimizer, milestones, gamma=cfg["lr_drop"]))
    return accuracy(model, *test, transform=TRANSFORM), steps(history)


def run_feature_extraction(weights_path, features, labels, test_features, test_labels, per_class, cfg, seed,
                           show_summary=False):
    """(b) Pre-trained body frozen; the head (fc1, new fc2) trained on cached features. Returns the
    model (whose fc1/fc2 are the trained head), the accuracy and the steps."""
    opts = cfg["feature_extraction"]
    nn.manual_seed(seed)
    model = pretrained_model(weights_path)
    transfer.freeze(model, list(BODY))
    head = model[FEATURE_CUT:]  # dropout1 ... fc2, sharing its layers with `model`
    if show_summary:
        print("\n  transfer.summary of the feature-extraction model (fine_tune trains fc1 and fc2, on cached features):")
        print("    " + transfer.summary(model).replace("\n", "\n    "))
    loader, epochs, milestones = stage2_batches(features, labels, opts, per_class, cfg, seed)
    history = train_head(head, loader, epochs, opts["lr"], milestones, cfg["lr_drop"])
    # The head is evaluated on the cached test features: the same outputs as the whole model on
    # the test images (stage2 checks this once), without running the body again.
    return model, accuracy(head, test_features, test_labels), steps(history)


def run_fine_tuning(model, train, test, per_class, cfg, seed):
    """(c) Phase 2 of transfer.fine_tune, continuing from the feature-extraction model (phase 1:
    body frozen, head trained): everything trains, the body at a ten times lower learning rate
    than the head (transfer.param_groups gives SGD the two groups)."""
    opts = cfg["fine_tuning"]
    nn.manual_seed(seed)
    loader, epochs, milestones = stage2_batches(*train, opts, per_class, cfg, seed, TRANSFORM)
    history = transfer.fine_tune(model, nn.CrossEntropyLoss(), loader, head_epochs=0, full_epochs=epochs,
                                 lr=opts["lr"], body_lr=opts["body_lr"], momentum=MOMENTUM, head=HEAD,
                                 full_milestones=milestones, gamma=cfg["lr_drop"], progress=False)
    return accuracy(model, *test, transform=TRANSFORM), steps(history)


def measure_cache_speedup(weights_path, images, labels, features, cfg, seed):
    """Wall time of one epoch of feature-extraction training done two ways: pushing every batch
    through the frozen body (conv1, conv2 forward at every step), or on the cached features.
    Both run the same computation on the same batches; only the repeated body forward differs."""
    opts = cfg["feature_extraction"]
    n = min(cfg["speedup_images"], len(labels))
    times = {}
    for way in ("frozen_body", "cached"):
        nn.manual_seed(seed)
        model = pretrained_model(weights_path)
        net, inputs, transform = (model, images, TRANSFORM) if way == "frozen_body" else (model[FEATURE_CUT:], features, None)
        loader = DataLoader(inputs[:n], labels[:n], batch_size=min(opts["batch_size"], n), shuffle=True, seed=seed,
                            transform=transform)
        started = time.perf_counter()
        train_head(net, loader, 1, opts["lr"])
        times[way] = time.perf_counter() - started
    return n, times


def cache_features(weights_path, task_b, cfg, seed):
    """The frozen body's output for every 5-9 image, computed once (the body's weights never change
    in feature extraction, so neither does its output), and the speed-up it buys."""
    (train_b, test_b) = task_b
    t0 = time.perf_counter()
    extractor = transfer.load_model(weights_path)
    train = transfer.extract_features(extractor, TRANSFORM(train_b[0]), before=FEATURE_CUT, batch_size=EVAL_BATCH)
    test = transfer.extract_features(extractor, TRANSFORM(test_b[0]), before=FEATURE_CUT, batch_size=EVAL_BATCH)
    extract_time = time.perf_counter() - t0
    images = len(train_b[1]) + len(test_b[1])
    print(f"  features cached: {train.shape[0] + test.shape[0]} images -> {train.shape[1:]} each (the max-pool output), "
          f"{extract_time:.1f} s, {(train.nbytes + test.nbytes) / 2**20:.0f} MiB")

    n_speed, times = measure_cache_speedup(weights_path, *train_b, train, cfg, seed)
    speedup = times["frozen_body"] / times["cached"]
    print(f"  one epoch of head training on {n_speed} images: {times['frozen_body']:.2f} s through the frozen body, "
          f"{times['cached']:.2f} s on cached features -> {speedup:.1f}x faster")
    print(f"  (caching costs one forward pass, {extract_time:.1f} s for all {images} images, "
          f"paid once for every budget, seed and epoch below)")
    return {"train": train, "test": test, "extract_time": extract_time, "images": images,
            "feature_shape": list(train.shape[1:]), "speedup_images": n_speed, "epoch_time_frozen_body": times["frozen_body"],
            "epoch_time_cached": times["cached"], "speedup": speedup}


def stage2(weights_path, task_b, cache, cfg, seed):
    """The three strategies on every (budget, subset) of the protocol; returns the runs (one dict
    each) and the one-off check that the head trained on cached features is the network's head."""
    (train_b, test_b) = task_b
    runs, check = [], None
    for per_class, s, index in subsets(cfg, train_b[1], seed):
        train = (train_b[0][index], train_b[1][index])
        this_seed = run_seed(seed, per_class, s)
        row = dict(labels_per_class=budget_key(per_class), seed=s, train_size=len(index))

        t0 = time.perf_counter()  # (a) from scratch
        acc, taken = run_scratch(train, test_b, per_class, cfg, this_seed)
        runs.append(dict(strategy="scratch", **row, steps=taken, accuracy=acc, time=time.perf_counter() - t0))

        t0 = time.perf_counter()  # (b) feature extraction: frozen pre-trained body, head on cached features
        model, acc, taken = run_feature_extraction(weights_path, cache["train"][index], train[1], cache["test"], test_b[1],
                                                   per_class, cfg, this_seed, show_summary=check is None)
        fe_time = time.perf_counter() - t0
        runs.append(dict(strategy="feature_extraction", **row, steps=taken, accuracy=acc, time=fe_time))
        if check is None:
            # Once, proof that the head trained on cached features is the network's head:
            # plugged back behind the frozen body, the whole model scores the same.
            whole = accuracy(model, *test_b, transform=TRANSFORM)
            check = {"head_on_cached_features": acc, "whole_model_on_images": whole}
            print(f"  check: head on cached test features {acc:.2%}, whole model on the test images "
                  f"{whole:.2%}{'' if whole == acc else '  <-- MISMATCH'}\n")

        t0 = time.perf_counter()  # (c) fine-tuning: continue from (b)'s model, everything trainable, body lr / 10
        acc, taken = run_fine_tuning(model, train, test_b, per_class, cfg, this_seed)
        runs.append(dict(strategy="fine_tuning", **row, steps=taken, accuracy=acc, time=fe_time + time.perf_counter() - t0))
        line = ", ".join(f"{r['strategy']} {r['accuracy']:.2%} ({r['time']:.1f} s)" for r in runs[-3:])
        print(f"  {budget_key(per_class):>4} labels/class, seed {s}: {line}", flush=True)
    return runs, check

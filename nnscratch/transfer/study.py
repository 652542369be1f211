"""Which layers transfer? The AnB / BnB protocol of Yosinski et al. (2014) on MNIST.

Yosinski, Clune, Bengio and Lipson, "How transferable are features in deep neural networks?"
(NeurIPS 2014) split ImageNet's classes into two halves A and B, trained a *base* network on
each, and then, for every depth n, built new networks for task B whose first n layers were
copied from a base network:

========  ================================================  =============================
name      first n layers                                    the layers above
========  ================================================  =============================
``BnB``   copied from the net trained on **B**, frozen      random, trained on B
``BnB+``  copied from the net trained on **B**, fine-tuned  random, trained on B
``AnB``   copied from the net trained on **A**, frozen      random, trained on B
``AnB+``  copied from the net trained on **A**, fine-tuned  random, trained on B
``RnB``   random (never trained), frozen                    random, trained on B
========  ================================================  =============================

``n = 0`` is the base network for B trained from scratch: the *baseline*. BnB asks whether
the layers of a network can be split and the top retrained without loss (they cannot when
neighbouring layers *co-adapted*: features that only work together); AnB, how general the
first n layers of a network trained on other classes are; AnB+ whether starting from them
still helps after everything is trained; RnB how much of AnB's accuracy random frozen features
already give (Jarrett et al., 2009). See docs/transfer_studies.md and notebook 05.

Here A is the digits 0-4 and B the digits 5-9 (both relabelled 0-4), B with few labels.
Frozen layers are run once: their outputs are cached (:func:`nnscratch.transfer.extract_features`)
and only the layers above train on them, which is the same computation (the network has no
dropout) at a fraction of the cost. Every run records two mechanical facts: its copied layers
were bit-identical to the source before training, and its frozen layers are bit-identical after.

Nothing runs at import; everything is seeded.
"""
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import transfer
from ..backends import get_num_threads, set_num_threads
from ..nn.activation import ReLU
from ..nn.container import Sequential
from ..nn.conv import Conv2d
from ..data import DataLoader, per_class_subset, prepare_images, subset_by_labels
from ..nn.dense import Dense
from ..nn.flatten import Flatten
from ..nn.losses import CrossEntropyLoss
from ..optim import SGD
from ..nn.pooling import MaxPool2d
from ..rng import manual_seed
from ..training import evaluate, fit

TREATMENTS = ("BnB", "BnB+", "AnB", "AnB+", "RnB")
"""The five treatments of every depth n, in the order of the paper's Figure 2 (plus the control)."""

DIGITS_A, DIGITS_B = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)

NOISE = 0.003
"""Smallest accuracy difference (0.3 points) counted as an effect in :func:`findings`: about one
binomial standard deviation of a test accuracy near 95 % measured on the 4,861 test images of B,
sqrt(0.95 * 0.05 / 4861) = 0.31 %. Smaller differences are within the test set's own noise."""


def transfer_net(channels=(8, 16, 16, 32), hidden=64, num_classes=5):
    """The study's network: four 3×3 convolutions and two dense layers, six weight layers.

    ::

        conv1 (1 -> c1)   relu1  pool1 (max 2)  28 -> 26 -> 13
        conv2 (c1 -> c2)  relu2                 13 -> 11
        conv3 (c2 -> c3)  relu3                 11 -> 9
        conv4 (c3 -> c4)  relu4  pool2 (max 2)   9 -> 7 -> 3
        flatten  fc1 (c4·3·3 -> hidden)  relu5
        fc2 (hidden -> num_classes): logits, for CrossEntropyLoss

    Five transfer points (n = 1..5: up to conv1, ..., up to fc1); fc2 is always new. Like the
    AlexNet of the paper it pools right after conv1, so the three convolutions above work on
    small maps and a training step costs little. No dropout, so the output of a frozen prefix is
    the same in training and in eval mode, and caching it is exact.
    """
    c1, c2, c3, c4 = channels
    return Sequential(OrderedDict([
        ("conv1", Conv2d(1, c1, 3)), ("relu1", ReLU()), ("pool1", MaxPool2d(2)),
        ("conv2", Conv2d(c1, c2, 3)), ("relu2", ReLU()),
        ("conv3", Conv2d(c2, c3, 3)), ("relu3", ReLU()),
        ("conv4", Conv2d(c3, c4, 3)), ("relu4", ReLU()), ("pool2", MaxPool2d(2)),
        ("flatten", Flatten(1)), ("fc1", Dense(c4 * 3 * 3, hidden)), ("relu5", ReLU()),
        ("fc2", Dense(hidden, num_classes)),
    ]))


def weight_layers(model):
    """Names of the layers holding parameters (Conv2d, Dense), in forward order."""
    return [name for name, layer in model.named_children() if isinstance(layer, (Conv2d, Dense))]


def transfer_points(model):
    """The depths n that can be transferred: 1 .. (number of weight layers - 1); the last is the head."""
    return list(range(1, len(weight_layers(model))))


def _check_depth(model, n, caller):
    points = transfer_points(model)
    if not (isinstance(n, (int, np.integer)) and 0 <= n <= points[-1]):
        raise ValueError(f"{caller}: n={n!r} layers cannot be transferred; expected 0..{points[-1]} "
                         f"(the weight layers are {weight_layers(model)}, the last is the head)")
    return int(n)


def copy_layers(source, target, n):
    """Copy the parameters of the first `n` weight layers of `source` into `target` (new arrays:
    training `target` never changes `source`); returns the names of the copied layers."""
    _check_depth(target, n, "copy_layers")
    names = weight_layers(target)[:n]
    if weight_layers(source)[:n] != names:
        raise ValueError(f"copy_layers: the source's weight layers {weight_layers(source)} do not match the "
                         f"target's {weight_layers(target)}")
    for name in names:
        for (key, src), (_, dst) in zip(source[name].named_parameters(), target[name].named_parameters()):
            if src.shape != dst.shape:
                raise ValueError(f"copy_layers: {name}.{key} has shape {src.shape} in the source and "
                                 f"{dst.shape} in the target")
            dst.data = src.data.copy()
    return names


def bit_identical(source, target, n):
    """True when the parameters of the first `n` weight layers are byte for byte the same in both."""
    for name in weight_layers(target)[:n]:
        for src, dst in zip(source[name].parameters(), target[name].parameters()):
            if src.dtype != dst.dtype or src.data.tobytes() != dst.data.tobytes():
                return False
    return True


def transferred_net(source, n, *, fine_tune, seed, build=transfer_net):
    """A new network for B: `build()` initialized from `seed`, its first `n` weight layers copied
    from `source` and frozen unless `fine_tune`. The layers above depend on `seed` only, so AnB,
    BnB, ... of one (seed, n) start from the same random upper layers."""
    manual_seed(seed)
    model = build()
    copied = copy_layers(source, model, n)
    if copied and not fine_tune:
        transfer.freeze(model, copied)
    return model


# ---------------------------------------------------------------------------------------------
# tasks and training
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """How a network is trained: SGD with momentum (the seed article's optimizer, section 4.3)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9


def make_tasks(train, test, b_per_class, seed, a_limit=None, test_limit=None):
    """The two tasks from MNIST's ``(images, labels)`` pairs: A = digits 0-4 (all training images,
    or the first `a_limit`), B = digits 5-9 with `b_per_class` training labels per class drawn
    with `seed`; both relabelled 0-4. Test sets: all (or the first `test_limit`) test images.
    Returns a dict of raw (uint8) ``(images, labels)`` pairs: A_train, A_test, B_train, B_test."""
    def first(pair, count):
        return pair if count is None else (pair[0][:count], pair[1][:count])

    a_train, b_pool = subset_by_labels(*train, DIGITS_A), subset_by_labels(*train, DIGITS_B)
    return {"A_train": first(a_train, a_limit),
            "A_test": first(subset_by_labels(*test, DIGITS_A), test_limit),
            "B_train": per_class_subset(*b_pool, b_per_class, seed=seed),
            "B_test": first(subset_by_labels(*test, DIGITS_B), test_limit)}


def train(model, images, labels, schedule, seed, transform=prepare_images):
    """Train the trainable parameters of `model` on the pair with `schedule`, batches shuffled
    with `seed`; returns the :class:`~nnscratch.History`."""
    optimizer = SGD([p for p in model.parameters() if p.requires_grad], lr=schedule.lr, momentum=schedule.momentum)
    loader = DataLoader(images, labels, batch_size=schedule.batch_size, shuffle=True, seed=seed, transform=transform)
    return fit(model, CrossEntropyLoss(), optimizer, loader, schedule.epochs, progress=False)


def accuracy(model, images, labels, transform=prepare_images):
    """Test accuracy (fraction) in eval mode."""
    return evaluate(model, None, DataLoader(images, labels, batch_size=500, transform=transform))["accuracy"]


def run_treatment(treatment, n, sources, tasks, schedule, seed, build=transfer_net):
    """Train one network of the protocol and measure it.

    `treatment` is one of :data:`TREATMENTS`; `sources` maps "A", "B", "R" to the base networks
    (trained on A, trained on B, untrained). Frozen layers run once over the training and test
    images of B (cached features); only the layers above them train. Returns a dict: treatment,
    n, seed, accuracy, seconds, ``copied_bit_identical`` (checked before training) and
    ``frozen_unchanged`` (after), ``frozen`` (the frozen parameter names)."""
    if treatment not in TREATMENTS:
        raise ValueError(f"run_treatment: unknown treatment {treatment!r}; expected one of {TREATMENTS}")
    started = time.perf_counter()
    fine_tune = treatment.endswith("+")
    source = sources[treatment[0]]
    model = transferred_net(source, n, fine_tune=fine_tune, seed=seed, build=build)
    identical = bit_identical(source, model, n)
    snapshot = transfer.frozen_snapshot(model)
    (train_x, train_y), (test_x, test_y) = tasks["B_train"], tasks["B_test"]
    if snapshot:   # frozen prefix: computed once, the layers above train on its outputs
        cut = weight_layers(model)[n]
        features = transfer.extract_features(model, train_x, before=cut, transform=prepare_images)
        test_features = transfer.extract_features(model, test_x, before=cut, transform=prepare_images)
        top = model[cut:]
        train(top, features, train_y, schedule, seed, transform=None)
        result = accuracy(top, test_features, test_y, transform=None)
    else:
        train(model, train_x, train_y, schedule, seed)
        result = accuracy(model, test_x, test_y)
    try:
        transfer.assert_frozen_unchanged(model, snapshot)
        unchanged = True
    except AssertionError:
        unchanged = False
    return {"treatment": treatment, "n": int(n), "seed": int(seed), "accuracy": result,
            "seconds": time.perf_counter() - started, "copied_bit_identical": identical,
            "frozen_unchanged": unchanged, "frozen": list(snapshot)}


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyConfig:
    """Sizes and schedules of a study. The defaults are the full study; :data:`QUICK` a tiny one."""

    b_per_class: int = 100
    pretrain: Schedule = field(default_factory=lambda: Schedule(epochs=2, batch_size=64, lr=0.01))
    target: Schedule = field(default_factory=lambda: Schedule(epochs=20, batch_size=20, lr=0.01))
    channels: tuple = (8, 16, 16, 32)
    hidden: int = 64
    points: tuple = (1, 2, 3, 4, 5)
    treatments: tuple = TREATMENTS
    a_limit: int = None
    test_limit: int = None

    def build(self):
        """A fresh network of this study (initialized from the library generator)."""
        return transfer_net(self.channels, self.hidden)

    def runs_per_seed(self):
        """Trainings per seed: base A, base B, then every treatment at every depth."""
        return 2 + len(self.points) * len(self.treatments)


QUICK = StudyConfig(b_per_class=10, pretrain=Schedule(epochs=1, batch_size=32, lr=0.02),
                    target=Schedule(epochs=3, batch_size=10, lr=0.02), points=(1, 3, 5), a_limit=1_000,
                    test_limit=300)
"""A study that exercises every code path in seconds; its accuracies mean nothing."""


def base_networks(tasks, config, seed):
    """Train the base networks of one seed: ``({"A": net, "B": net, "R": untrained net}, accuracies)``
    where accuracies holds baseA on A's test set and baseB (the n = 0 baseline) on B's."""
    manual_seed(10_000 * seed + 1)
    base_a = config.build()
    train(base_a, *tasks["A_train"], config.pretrain, seed)
    manual_seed(10_000 * seed + 2)
    base_b = config.build()
    train(base_b, *tasks["B_train"], config.target, seed)
    manual_seed(10_000 * seed + 3)
    random_net = config.build()
    scores = {"A": accuracy(base_a, *tasks["A_test"]), "B": accuracy(base_b, *tasks["B_test"])}
    return {"A": base_a, "B": base_b, "R": random_net}, scores


def run_seed(train_pair, test_pair, config, seed, on_run=None):
    """One seed of the study: its own B subset, base networks and every treatment × depth.

    `on_run(description)` is called after each training (for a progress bar). Returns a dict:
    seed, base (accuracies of baseA on A and baseB on B), runs (one :func:`run_treatment` dict
    each) and ``sources_unchanged`` (the base networks are bit-identical after all the runs)."""
    on_run = on_run or (lambda description: None)
    tasks = make_tasks(train_pair, test_pair, config.b_per_class, seed, config.a_limit, config.test_limit)
    sources, base = base_networks(tasks, config, seed)
    on_run(f"seed {seed}: base networks")
    before = {key: {k: v.copy() for k, v in net.state_dict().items()} for key, net in sources.items()}
    runs = []
    for n in config.points:
        for treatment in config.treatments:
            runs.append(run_treatment(treatment, n, sources, tasks, config.target, 10_000 * seed + 100 + n,
                                      config.build))
            on_run(f"seed {seed}: {treatment} n={n} {runs[-1]['accuracy']:.2%}")
    unchanged = all(np.array_equal(before[key][k], v) for key, net in sources.items()
                    for k, v in net.state_dict().items())
    return {"seed": int(seed), "base": base, "runs": runs, "sources_unchanged": unchanged,
            "sources": sources}


def run_study(train_pair, test_pair, config, seeds, on_run=None, threads=1):
    """Every seed of the study; returns a JSON-able dict (config, seeds: :func:`run_seed` results
    without the networks) and the networks of each seed as ``{seed: sources}``.

    The kernels run on `threads` threads meanwhile (the previous count is restored afterwards).
    One is fastest here: the batches of 20 small maps give each kernel call microseconds of work,
    less than it costs to wake and join a second thread (on a busy machine, where the threads wait
    for a core, two threads measured 30 times slower than one)."""
    results, networks = [], {}
    previous = get_num_threads()
    set_num_threads(threads)
    try:
        for seed in seeds:
            one = run_seed(train_pair, test_pair, config, seed, on_run)
            networks[one["seed"]] = one.pop("sources")
            results.append(one)
    finally:
        set_num_threads(previous)
    return {"config": asdict(config), "seeds": results}, networks


# ---------------------------------------------------------------------------------------------
# reading the results
# ---------------------------------------------------------------------------------------------


def accuracies(results):
    """``(baseline, curves)``: baseline is the list of baseB accuracies (one per seed); curves maps
    each treatment to ``{n: [accuracy per seed]}``, seeds in the same order."""
    baseline = [one["base"]["B"] for one in results["seeds"]]
    curves = {}
    for one in results["seeds"]:
        for run in one["runs"]:
            curves.setdefault(run["treatment"], {}).setdefault(run["n"], []).append(run["accuracy"])
    return baseline, curves


def _mean_sd(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def table(results):
    """Mean and sd over seeds: ``{"baseline": {mean, sd, n: 0}, treatment: {n: {mean, sd}}}``."""
    baseline, curves = accuracies(results)
    mean, sd = _mean_sd(baseline)
    summary = {"baseline": {"mean": mean, "sd": sd}}
    for treatment, by_depth in curves.items():
        summary[treatment] = {n: dict(zip(("mean", "sd"), _mean_sd(values))) for n, values in by_depth.items()}
    return summary


def findings(results, noise=NOISE):
    """The paper's three findings, measured in every seed.

    * ``co_adaptation``: BnB dips below the baseline. Measured: ``dip`` = baseline - the lowest BnB
      over n, at depth ``at``; holds when dip > `noise`.
    * ``specificity``: AnB falls as n grows. Measured: ``drop`` = AnB at the first depth - AnB at
      the last; holds when drop > `noise`. Also reported: ``gap_first``/``gap_last``, BnB - AnB at
      those depths (the part of the drop that co-adaptation does not explain).
    * ``boost``: AnB+ above the baseline. Measured: ``margin`` = the lowest AnB+ over n - baseline;
      holds when margin > `noise` (above the baseline at every depth).

    Returns ``{finding: {"per_seed": [dict per seed], "held_in": k, "seeds": m, "holds_in_every_seed": bool}}``.
    """
    out = {"co_adaptation": [], "specificity": [], "boost": []}
    for one in results["seeds"]:
        base = one["base"]["B"]
        acc = {(r["treatment"], r["n"]): r["accuracy"] for r in one["runs"]}
        depths = sorted({r["n"] for r in one["runs"]})
        bnb = {n: acc[("BnB", n)] for n in depths}
        worst = min(depths, key=bnb.get)
        out["co_adaptation"].append({"seed": one["seed"], "dip": base - bnb[worst], "at": worst,
                                     "holds": base - bnb[worst] > noise})
        first, last = depths[0], depths[-1]
        drop = acc[("AnB", first)] - acc[("AnB", last)]
        out["specificity"].append({"seed": one["seed"], "drop": drop, "holds": drop > noise,
                                   "gap_first": bnb[first] - acc[("AnB", first)],
                                   "gap_last": bnb[last] - acc[("AnB", last)]})
        margin = min(acc[("AnB+", n)] for n in depths) - base
        out["boost"].append({"seed": one["seed"], "margin": margin, "holds": margin > noise})
    return {name: {"per_seed": rows, "held_in": sum(r["holds"] for r in rows), "seeds": len(rows),
                   "holds_in_every_seed": all(r["holds"] for r in rows)}
            for name, rows in out.items()}


def format_table(results):
    """The table as text: one row per treatment, one column per depth, mean ± sd in %."""
    summary = table(results)
    depths = sorted(next(iter(summary[t] for t in summary if t != "baseline")))
    seeds = len(results["seeds"])
    header = f"{'':8}" + "".join(f"{f'n={n}':>16}" for n in depths)
    lines = [f"test accuracy on B (digits 5-9), mean ± sd over {seeds} seed{'s' * (seeds > 1)}, in %",
             f"baseline B (n=0): {100 * summary['baseline']['mean']:.2f} ± {100 * summary['baseline']['sd']:.2f}",
             header]
    for treatment in TREATMENTS:
        if treatment in summary:
            cells = [summary[treatment][n] for n in depths]
            lines.append(f"{treatment:8}" + "".join(f"{100 * c['mean']:9.2f} ± {100 * c['sd']:4.2f}" for c in cells))
    return "\n".join(lines)


def mechanics_hold(results):
    """True when every run's copied layers were bit-identical before training, its frozen layers
    unchanged after, and every seed's base networks unchanged by the runs."""
    return all(run["copied_bit_identical"] and run["frozen_unchanged"] for one in results["seeds"]
               for run in one["runs"]) and all(one["sources_unchanged"] for one in results["seeds"])


__all__ = [
    "DIGITS_A", "DIGITS_B", "NOISE", "QUICK", "Schedule", "StudyConfig", "TREATMENTS", "accuracies", "accuracy",
    "base_networks", "bit_identical", "copy_layers", "findings", "format_table", "make_tasks",
    "mechanics_hold", "run_seed", "run_study", "run_treatment", "table", "train", "transfer_net",
    "transfer_points", "transferred_net", "weight_layers",
]

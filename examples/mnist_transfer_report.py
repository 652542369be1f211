"""The report of examples/mnist_transfer.py: the results table, where transfer helps (and where
it does not), the figures (through :mod:`nnscratch.plot`), the targets and the JSON file.

Part of the ``mnist_transfer`` example; it only reads what the runs (``mnist_transfer_runs.py``)
measured.
"""
import json
import time

import numpy as np
from mnist_transfer_protocol import (
    LABELS, NUM_CLASSES, STRATEGIES, TARGET_FROZEN_ALL, TARGET_GAIN_10, TARGET_PRETRAIN, TARGET_TIME,
    budget_key,
)

import nnscratch as nn
from nnscratch import plot
from nnscratch.io.atomic import write_atomic


def mean_sd(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def filters_figure(model, path):
    """conv1's filters after pre-training, as a picture."""
    plot.filters(model.conv1, title="conv1 filters after pre-training on digits 0-4").savefig(path, dpi=100)
    print(f"  conv1 filters: {path}")


def table(runs, budgets):
    """{strategy: {budget: mean and sd of the accuracy over seeds, runs, mean time, steps, train size}}."""
    cells = {strategy: {} for strategy in STRATEGIES}
    for strategy in STRATEGIES:
        for per_class in budgets:
            key = budget_key(per_class)
            chosen = [r for r in runs if r["strategy"] == strategy and r["labels_per_class"] == key]
            mean, sd = mean_sd([r["accuracy"] for r in chosen])
            cells[strategy][key] = dict(mean=mean, sd=sd, n=len(chosen), time_mean=float(np.mean([r["time"] for r in chosen])),
                                        steps=chosen[0]["steps"], train_size=chosen[0]["train_size"])
    return cells


def print_table(cells, budgets, extract_time):
    print("\nTest accuracy on digits 5-9 (mean ± sd over seeds) and wall time per run:")
    header = f"{'labels/class':>14} | " + " | ".join(f"{LABELS[s]:^32}" for s in STRATEGIES)
    print(header)
    print("-" * len(header))
    for per_class in budgets:
        key = budget_key(per_class)
        n = cells["scratch"][key]["n"]
        row = []
        for strategy in STRATEGIES:
            cell = cells[strategy][key]
            sd = f" ± {100 * cell['sd']:4.1f}" if n > 1 else " " * 7
            row.append(f"{100 * cell['mean']:6.2f}{sd} %  {cell['time_mean']:6.1f} s".center(32))
        label = f"{key} ({n} seed{'s' * (n > 1)})"
        print(f"{label:>14} | " + " | ".join(row))
    print("(fine-tuning continues from the feature-extraction model: its time includes that run; "
          f"the one-off feature caching, {extract_time:.1f} s, is not in any row)")


def verdict(cell):
    """Where transfer helps at one budget, and -- said plainly -- where it does not. `cell` maps each
    strategy to its table cell at that budget."""
    acc = {strategy: 100 * cell[strategy]["mean"] for strategy in STRATEGIES}
    best = max(("feature_extraction", "fine_tuning"), key=acc.get)
    gain = acc[best] - acc["scratch"]
    versus = f"{LABELS[best]} {acc[best]:.2f} % vs scratch {acc['scratch']:.2f} %"
    if gain >= 2.0:
        text = f"transfer helps clearly, +{gain:.1f} points ({versus})"
    elif gain >= 0.3:
        text = f"transfer helps only a little, +{gain:.2f} points ({versus})"
    elif gain > -0.3:
        text = f"transfer does NOT help: roughly even ({versus})"
    else:
        text = f"transfer does NOT help: scratch is {-gain:.2f} points better ({versus})"
    extra = acc["fine_tuning"] - acc["feature_extraction"]
    ratio = cell["fine_tuning"]["time_mean"] / max(cell["feature_extraction"]["time_mean"], 1e-9)
    if extra < 0.3:
        text += (f"; fine-tuning adds {'nothing' if extra < 0.05 else 'little'} over feature extraction "
                 f"({extra:+.2f} points) at {ratio:.1f}x its time")
    return text


def accuracy_figure(runs, budgets, per_class_all, path):
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
    print(f"\naccuracy plot: {path}")


def targets(stage1, cells, total_time, quick):
    """The default run's targets (published numbers, see the protocol), each with its value and whether it is met."""
    found = {"pretrain_accuracy": dict(value=stage1["test_accuracy"], threshold=TARGET_PRETRAIN)}
    if "all" in cells["feature_extraction"]:
        found["frozen_conv_all_labels"] = dict(value=cells["feature_extraction"]["all"]["mean"], threshold=TARGET_FROZEN_ALL)
    if "10" in cells["scratch"]:
        best10 = max(cells["feature_extraction"]["10"]["mean"], cells["fine_tuning"]["10"]["mean"])
        found["gain_at_10_labels"] = dict(value=best10 - cells["scratch"]["10"]["mean"], threshold=TARGET_GAIN_10)
    for target in found.values():
        target["met"] = bool(target["value"] >= target["threshold"])
    found["total_time"] = dict(value=total_time, threshold=TARGET_TIME, met=bool(total_time <= TARGET_TIME))
    print("\nTargets" + (" (quick mode: not expected to be met)" if quick else "") + ":")
    for name, target in found.items():
        print(f"  {name:24} {target['value']:.4f} (target {'<=' if name == 'total_time' else '>='} "
              f"{target['threshold']}): {'met' if target['met'] else 'NOT met'}")
    return found


def report(args, cfg, protocol, stage1, cache, runs, check, plots, started):
    """Print the table, the verdicts and the targets, draw the accuracy figure, and return (and with
    ``--json``, write) every figure of the run; `started` is the run's ``time.perf_counter()`` at its start."""
    budgets = cfg["budgets"]
    cells = table(runs, budgets)
    print_table(cells, budgets, cache["extract_time"])
    print("\nWhere does transfer help? (differences in percentage points of test accuracy)")
    for per_class in budgets:
        key = budget_key(per_class)
        print(f"  {key:>4} labels/class: {verdict({strategy: cells[strategy][key] for strategy in STRATEGIES})}")
    per_class_all = round(protocol["train_sizes"]["target_pool"] / NUM_CLASSES)
    accuracy_figure(runs, budgets, per_class_all, plots["accuracy"])

    total_time = time.perf_counter() - started
    results = {
        "mode": "quick" if args.quick else "default",
        "backend": nn.backend(),
        "threads": nn.get_num_threads(),
        "seed": args.seed,
        "protocol": protocol,
        "stage1": stage1,
        "feature_cache": {**{k: v for k, v in cache.items() if k not in ("train", "test")}, "check": check},
        "runs": runs,
        "table": cells,
        "targets": targets(stage1, cells, total_time, args.quick),
        "plots": {name: str(path) for name, path in plots.items()},
        "total_time": total_time,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.json, json.dumps(results, indent=2).encode())
        print(f"results: {args.json}")
    print(f"\ntotal wall time: {total_time:.1f} s ({total_time / 60:.1f} min)")
    return results

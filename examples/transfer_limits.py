"""When transfer fails: data mismatch and task relatedness on MNIST, over several seeds.

The seed article (section 5 and its Q4) says transfer is limited by the mismatch between the
pre-training and the target data, and by how related the two tasks are. This script measures
both with tasks derived from MNIST (:mod:`nnscratch.data.shifts`; nothing is downloaded), with
the protocol of :mod:`nnscratch.transfer.limits` (shared with notebook 06). For each seed:

1. **Source.** A convnet (``keras_transfer_net``, 16 filters) learns the digits 0-4 (task A).
2. **Zero-shot.** The source, untouched, on A's test set after each shift: inverted, rotated
   90°, a fixed pixel permutation, and the wrong normalization x/255.
3. **Shifts as targets.** With 20 labelled shifted images per class, three strategies: frozen
   body (cached features; fc1 and a new fc2 trained), fine-tuned (then everything, body at
   lr/10), from scratch. Result: a strategy × shift heatmap (mean ± sd over seeds).
4. **Task relatedness.** The same three strategies for two new tasks (the parity of the digits
   0-4, and the digits 5-9); then frozen features from four sources for the digits 5-9: the
   source, a network trained on 500 A images with their real labels, one trained on the same
   500 images with random labels (it memorizes them), and an untrained network.
5. **Exact constructions** (checked in every run): negating conv1's weights gives bit-identical
   logits on negated inputs; a dense network with fc1's input columns permuted gives the same
   predictions on permuted pixels.

Run from the repository root::

    python examples/transfer_limits.py                     # 3 seeds, ~5 min on 2 idle cores
    python examples/transfer_limits.py --quick             # every code path in seconds (CI)
    python examples/transfer_limits.py --seeds 0 1 2 3 --json runs/transfer_limits/results.json

Outputs in ``--out`` (default ``runs/transfer_limits/``): ``mismatch_heatmap.png``,
``relatedness_heatmap.png`` and, with ``--json``, every number.
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import nnscratch as nn
from nnscratch import malloc
from nnscratch.transfer import limits as study
from nnscratch.data import per_class_subset, prepare_images
from nnscratch.data.shifts import parity_labels, pixel_permutation, random_labels, shifts
from nnscratch.plot.transfer import accuracy_heatmap

SOURCES = ("source (digits 0-4, all)", "500 images, real labels", "500 images, random labels", "untrained")
STAGES = ("source", "zero-shot", "constructions", "shifts as targets", "new tasks", "random labels")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                        help="seeds of the runs (default 0 1 2; --quick: 0)")
    parser.add_argument("--quick", action="store_true", help="tiny subsets and few epochs: every code path in seconds")
    parser.add_argument("--out", type=Path, default=Path("runs/transfer_limits"), metavar="DIR",
                        help="directory for the figures (created; default runs/transfer_limits/)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every measured number as JSON")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct non-negative integers, got {args.seeds}")
    return args


def constructions(source, dense, test_images, permutation):
    """The two exact constructions on `test_images` (uint8): their measured differences."""
    x = prepare_images(test_images)
    flipped = study.negate_first_layer(source)
    with source.eval_mode(), flipped.eval_mode():
        logits, logits_negated = source(x), flipped(-x)
        logits_inverted = flipped(prepare_images(255 - test_images))
        bias_too = study.copy_of(flipped)
        bias_too.conv1.bias.data[...] = -bias_too.conv1.bias.data
        with bias_too.eval_mode():
            logits_bias_negated = bias_too(-x)
    rewired = study.permute_input_columns(dense, permutation)
    x_permuted = x.reshape(len(x), -1)[:, permutation].reshape(x.shape)
    with dense.eval_mode(), rewired.eval_mode():
        dense_logits, dense_permuted = dense(x), rewired(x_permuted)
    return {
        "negated_conv1_bit_identical": bool(np.array_equal(logits, logits_negated)),
        "inverted_pixels_max_logit_gap": float(np.max(np.abs(logits - logits_inverted))),
        "inverted_pixels_same_predictions": bool(np.array_equal(logits.argmax(1), logits_inverted.argmax(1))),
        "bias_negated_too_max_logit_gap": float(np.max(np.abs(logits - logits_bias_negated))),
        "dense_permuted_same_predictions": bool(np.array_equal(dense_logits.argmax(1), dense_permuted.argmax(1))),
        "dense_permuted_max_logit_gap": float(np.max(np.abs(dense_logits - dense_permuted))),
    }


def run_seed(seed, cfg, tasks, bar):
    """Every measurement of one seed, as a dict."""
    (a_train, a_test), (b_train, b_test) = tasks["A"], tasks["B"]
    table = shifts(permutation_seed=seed)
    result = {"seed": seed}

    source = study.train_source(prepare_images(a_train[0]), a_train[1], cfg, seed)
    dense = study.train_source(prepare_images(a_train[0]), a_train[1], cfg, seed, dense=True)
    result["source_accuracy"] = study.accuracy(source, *a_test, transform=prepare_images)
    result["dense_accuracy"] = study.accuracy(dense, *a_test, transform=prepare_images)
    bar.update()

    result["zero_shot"] = study.zero_shot(source, *a_test, table)
    result["zero_shot_dense"] = study.zero_shot(dense, *a_test, {k: table[k] for k in ("none", "permuted")})
    bar.update()

    permutation = pixel_permutation(28 * 28, seed)  # the one of table["permuted"]
    result["constructions"] = constructions(source, dense, a_test[0][:500], permutation)
    bar.update()

    labelled = per_class_subset(*a_train, cfg.budget, seed=seed)
    result["shifts"] = {name: study.transfer_three_ways(source, shift(labelled[0]), labelled[1],
                                                         shift(a_test[0]), a_test[1], cfg, seed)
                        for name, shift in table.items()}
    bar.update()

    parity_train = per_class_subset(a_train[0], parity_labels(a_train[1]), cfg.budget * 5 // 2, seed=seed)
    b_labelled = per_class_subset(*b_train, cfg.budget, seed=seed)
    result["new_tasks"] = {
        "parity of 0-4": study.transfer_three_ways(source, prepare_images(parity_train[0]), parity_train[1],
                                                   prepare_images(a_test[0]), parity_labels(a_test[1]), cfg, seed,
                                                   num_classes=2),
        "digits 5-9": study.transfer_three_ways(source, prepare_images(b_labelled[0]), b_labelled[1],
                                                prepare_images(b_test[0]), b_test[1], cfg, seed),
    }
    bar.update()

    few = per_class_subset(*a_train, cfg.memorize_images // 5, seed=seed)
    few_inputs, noise = prepare_images(few[0]), random_labels(len(few[1]), 5, seed=seed)
    real_500 = study.memorizer(few_inputs, few[1], cfg, seed)
    random_500 = study.memorizer(few_inputs, noise, cfg, seed)
    nn.manual_seed([seed, 6])
    sources = dict(zip(SOURCES, (source, real_500, random_500, study.network(cfg))))
    result["random_labels"] = {
        "train_accuracy_random_labels": study.accuracy(random_500, few_inputs, noise),
        "test_accuracy_random_labels": study.accuracy(random_500, *a_test, transform=prepare_images),
        "test_accuracy_real_500": study.accuracy(real_500, *a_test, transform=prepare_images),
        "frozen_to_digits_5_9": {name: study.frozen_transfer(net, prepare_images(b_labelled[0]), b_labelled[1],
                                                             prepare_images(b_test[0]), b_test[1], cfg, seed)[1]
                                 for name, net in sources.items()},
    }
    bar.update()
    return result


def summarize(runs):
    """mean ± sd over seeds of every accuracy table; min and max too (what held in every seed)."""
    def cell(values):
        mean, sd = study.mean_sd(values)
        return {"mean": mean, "sd": sd, "min": float(min(values)), "max": float(max(values)), "n": len(values)}

    first = runs[0]
    return {
        "source_accuracy": cell([r["source_accuracy"] for r in runs]),
        "zero_shot": {k: cell([r["zero_shot"][k] for r in runs]) for k in first["zero_shot"]},
        "zero_shot_dense": {k: cell([r["zero_shot_dense"][k] for r in runs]) for k in first["zero_shot_dense"]},
        "shifts": {s: {k: cell([r["shifts"][s][k] for r in runs]) for k in study.STRATEGIES} for s in first["shifts"]},
        "new_tasks": {t: {k: cell([r["new_tasks"][t][k] for r in runs]) for k in study.STRATEGIES}
                      for t in first["new_tasks"]},
        "frozen_to_digits_5_9": {s: cell([r["random_labels"]["frozen_to_digits_5_9"][s] for r in runs])
                                 for s in SOURCES},
    }


def figures(runs, out, budget):
    """The two heatmaps as PNG files; returns their paths."""
    mismatch = {"zero-shot": {s: [r["zero_shot"][s] for r in runs] for s in runs[0]["zero_shot"]}}
    for strategy in study.STRATEGIES:
        mismatch[strategy] = {s: [r["shifts"][s][strategy] for r in runs] for s in runs[0]["shifts"]}
    related = {strategy: {t: [r["new_tasks"][t][strategy] for r in runs] for t in runs[0]["new_tasks"]}
               for strategy in study.STRATEGIES}
    frozen = {"frozen, from the source below": {s: [r["random_labels"]["frozen_to_digits_5_9"][s] for r in runs]
                                                for s in SOURCES}}
    paths = {"mismatch": out / "mismatch_heatmap.png", "relatedness": out / "relatedness_heatmap.png",
             "sources": out / "sources_heatmap.png"}
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    titles = {"mismatch": f"Source 0-4 → shifted 0-4, {budget} labels/class ({seeds})",
              "relatedness": f"Source 0-4 → a new task ({seeds})",
              "sources": f"Digits 5-9 on frozen features ({seeds})"}
    accuracy_heatmap(mismatch, xlabel="input shift of the digits 0-4", ylabel="strategy",
                     title=titles["mismatch"]).savefig(paths["mismatch"], dpi=100)
    accuracy_heatmap(related, xlabel="new task", ylabel="strategy",
                     title=titles["relatedness"]).savefig(paths["relatedness"], dpi=100)
    accuracy_heatmap(frozen, xlabel="frozen features from", title=titles["sources"]).savefig(paths["sources"], dpi=100)
    return {k: str(v) for k, v in paths.items()}


def print_tables(summary):
    pct = lambda c: f"{100 * c['mean']:5.1f} ± {100 * c['sd']:3.1f}"  # noqa: E731
    print(f"\nsource accuracy on 0-4: {pct(summary['source_accuracy'])} %")
    print("\nzero-shot accuracy of the source on shifted 0-4 (%):")
    for name, c in summary["zero_shot"].items():
        print(f"  {name:12} {pct(c)}")
    print("\nshifts as targets (%):      " + "  ".join(f"{s:>13}" for s in study.STRATEGIES))
    for name, row in {**summary["shifts"], **summary["new_tasks"]}.items():
        print(f"  {name:25} " + "  ".join(f"{pct(row[s]):>13}" for s in study.STRATEGIES))
    print("\ndigits 5-9 on frozen features from (%):")
    for name, c in summary["frozen_to_digits_5_9"].items():
        print(f"  {name:28} {pct(c)}")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = study.QUICK if args.quick else study.FULL
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"nnscratch {nn.__version__}, backend {nn.backend()}, {nn.get_num_threads()} threads, seeds {args.seeds}"
          f"{', QUICK mode (tiny subsets: accuracies are not meaningful)' if args.quick else ''}")
    runs = []
    with tqdm(total=len(args.seeds) * len(STAGES), desc="transfer limits", unit="stage", disable=None) as bar:
        for seed in args.seeds:
            tasks = study.load_tasks(cfg, seed)
            seed_started = time.perf_counter()
            runs.append(run_seed(seed, cfg, tasks, bar))
            bar.write(f"seed {seed}: {time.perf_counter() - seed_started:.0f} s, source "
                      f"{runs[-1]['source_accuracy']:.2%}, zero-shot "
                      + ", ".join(f"{k} {v:.1%}" for k, v in runs[-1]["zero_shot"].items()))
            bad = [k for k in ("negated_conv1_bit_identical", "dense_permuted_same_predictions")
                   if not runs[-1]["constructions"][k]]
            if bad:
                raise AssertionError(f"seed {seed}: exact construction failed: {bad}")
    summary = summarize(runs)
    print_tables(summary)
    results = {"mode": "quick" if args.quick else "full", "backend": nn.backend(), "seeds": args.seeds,
               "config": dataclasses.asdict(cfg), "runs": runs, "summary": summary,
               "plots": figures(runs, args.out, cfg.budget), "total_time": time.perf_counter() - started}
    print(f"\nfigures in {args.out}; {results['total_time']:.0f} s in all")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    malloc.keep_freed_memory()
    main()

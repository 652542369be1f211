"""Which layers transfer? Yosinski et al.'s (2014) AnB/BnB study on MNIST, every seed, as a script.

Task A is the digits 0-4, task B the digits 5-9 with 100 labels per class. For every depth
n = 1..5 a network for B gets its first n layers from a base network trained on B (BnB), on A
(AnB) or from an untrained one (RnB), frozen, or fine-tuned (BnB+, AnB+); n = 0 is the
baseline trained on B from scratch. The protocol is :mod:`nnscratch.transfer.study` (the same
code as notebook 05); the results are in docs/transfer_studies.md::

    python examples/layer_transfer.py                       # full study, seeds 0-4 (~4 min on 2 cores)
    python examples/layer_transfer.py --quick               # tiny, seconds: checks that everything runs
    python examples/layer_transfer.py --seeds 3 --json runs/layer_transfer.json

It prints the table (mean ± sd over seeds), which of the paper's three findings held in which
seeds, and writes two figures to --out: the paper's Figure 2 layout and conv1's filters learned
on A and on B.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import nnscratch as nn
from nnscratch import malloc, plot
from nnscratch.transfer import study
from nnscratch.data import load_mnist

FINDINGS = {
    "co_adaptation": "fragile co-adaptation (BnB dips below the baseline)",
    "specificity": "growing specificity (AnB falls as n grows)",
    "boost": "lasting boost (AnB+ above the baseline at every n)",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..k-1 (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny data and schedules: seconds, accuracies meaningless")
    parser.add_argument("--json", type=Path, default=None, help="write every run and the summaries here")
    parser.add_argument("--out", type=Path, default=Path("runs/layer_transfer"), help="folder of the figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least one seed is needed")
    return args


def describe_findings(found):
    """One line per finding: held in k of m seeds, with each seed's measure in points."""
    measures = {"co_adaptation": "dip", "specificity": "drop", "boost": "margin"}
    lines = []
    for name, text in FINDINGS.items():
        result = found[name]
        values = ", ".join(f"{100 * row[measures[name]]:+.2f}" for row in result["per_seed"])
        verdict = "REPRODUCED" if result["holds_in_every_seed"] else (
            "not reproduced" if result["held_in"] == 0 else "mixed")
        lines.append(f"  {text}: held in {result['held_in']} of {result['seeds']} seeds -> {verdict} "
                     f"({measures[name]} per seed, points: {values})")
    return "\n".join(lines)


def save_figures(results, networks, out):
    """The Figure 2 layout and conv1's filters of the first seed's base networks A and B."""
    out.mkdir(parents=True, exist_ok=True)
    baseline, curves = study.accuracies(results)
    paths = {"layer_transfer": out / "layer_transfer.png", "filters": out / "conv1_filters_A_B.png"}
    plot.layer_transfer(baseline, curves).savefig(paths["layer_transfer"], dpi=100)
    first = networks[min(networks)]
    both = np.concatenate([first["A"].conv1.weight.data, first["B"].conv1.weight.data])
    plot.filters(both, ncols=len(first["A"].conv1.weight.data),
                 title="conv1 filters: top row learned on A (0-4), bottom row on B (5-9)").savefig(paths["filters"],
                                                                                                    dpi=100)
    return {key: str(path) for key, path in paths.items()}


def main(argv=None):
    args = parse_args(argv)
    config = study.QUICK if args.quick else study.StudyConfig()
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    print(f"nnscratch {nn.__version__} · backend {nn.backend()} · {'quick' if args.quick else 'full'} mode · "
          f"seeds {seeds}")
    print(f"A: digits 0-4 ({config.a_limit or 'all'} training images), B: digits 5-9 with {config.b_per_class} "
          f"labels per class; depths {list(config.points)}; {config.runs_per_seed()} trainings per seed")
    train, test = load_mnist()
    bar = tqdm(total=len(seeds) * config.runs_per_seed(), disable=args.no_progress or None, unit="run",
               file=sys.stderr)

    def on_run(description):
        bar.set_postfix_str(description, refresh=False)
        bar.update(2 if description.endswith("base networks") else 1)

    results, networks = study.run_study(train, test, config, seeds, on_run=on_run)
    bar.close()
    found = study.findings(results)
    results.update(mode="quick" if args.quick else "full", backend=nn.backend(), threads=nn.get_num_threads(),
                   table={key: value if key == "baseline" else {str(n): cell for n, cell in value.items()}
                          for key, value in study.table(results).items()},
                   findings=found, mechanics_hold=study.mechanics_hold(results),
                   base_accuracy={kind: [one["base"][kind] for one in results["seeds"]] for kind in ("A", "B")})
    print()
    print(study.format_table(results))
    base_a = np.array(results["base_accuracy"]["A"])
    print(f"base network on A (0-4): {100 * base_a.mean():.2f} % (min {100 * base_a.min():.2f})")
    print("\nThe paper's findings on MNIST (an effect counts when larger than "
          f"{100 * study.NOISE:.1f} points, the test set's noise):")
    print(describe_findings(found))
    print(f"\nmechanics (copied layers bit-identical before training, frozen ones after, sources untouched): "
          f"{'hold in every run' if results['mechanics_hold'] else 'BROKEN'}")
    results["plots"] = save_figures(results, networks, args.out)
    results["total_time"] = time.perf_counter() - started
    print(f"figures: {', '.join(results['plots'].values())}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        print(f"results: {args.json}")
    print(f"total wall time: {results['total_time']:.0f} s ({results['total_time'] / 60:.1f} min)")
    return results


if __name__ == "__main__":
    # a training script may keep freed memory for reuse; a library import never does (nnscratch/malloc.py)
    malloc.keep_freed_memory()
    main()

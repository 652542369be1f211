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
budgets), train each strategy on it for a fixed number of optimization steps (see DEFAULT in
``mnist_transfer_protocol.py`` for why steps and not epochs), and measure the accuracy on the *whole* 5-9 test set
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

The script is in four files, each read on its own: this one (command line and ``main``),
``mnist_transfer_protocol.py`` (tasks, budgets, steps, seeds, targets: what is measured),
``mnist_transfer_runs.py`` (pre-training and the three strategies, trained with
:func:`nnscratch.fit`, ``MultiStepLR`` and :func:`nnscratch.transfer.fine_tune`) and
``mnist_transfer_report.py`` (table, verdicts, figures, targets, JSON).
"""
import argparse
import time
from pathlib import Path

import mnist_transfer_protocol as protocol
import mnist_transfer_report as report
import mnist_transfer_runs as runs

import nnscratch as nn
from nnscratch import malloc


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


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = protocol.config(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"nnscratch {nn.__version__}, backend {nn.backend()}, {nn.get_num_threads()} threads"
          f"{', QUICK mode (tiny subsets: accuracies are not meaningful)' if args.quick else ''}")
    task_a, task_b = protocol.load_tasks(cfg, args.seed)  # digits 0-4; digits 5-9 relabelled 0-4
    sizes = {"train_sizes": {"pretrain": len(task_a[0][1]), "target_pool": len(task_b[0][1])},
             "test_sizes": {"pretrain": len(task_a[1][1]), "target": len(task_b[1][1])}}
    print(f"task A (digits 0-4): {sizes['train_sizes']['pretrain']} training, {sizes['test_sizes']['pretrain']} test "
          f"images; task B (digits 5-9): {sizes['train_sizes']['target_pool']} training, "
          f"{sizes['test_sizes']['target']} test images")
    plots = {"accuracy": args.out / "accuracy_vs_labels.png", "filters": args.out / "conv1_filters.png"}

    model_a, stage1 = runs.stage1(task_a, cfg, args)  # pre-train on 0-4 (or reuse --weights)
    print(f"  test accuracy on digits 0-4: {stage1['test_accuracy']:.2%} ({sizes['test_sizes']['pretrain']} images; "
          f"Keras reports 99.8 %)")
    report.filters_figure(model_a, plots["filters"])
    del model_a

    print("\n== Stage 2: digits 5-9, from scratch vs feature extraction vs fine-tuning ==")
    cache = runs.cache_features(stage1["weights"], task_b, cfg, args.seed)
    results, check = runs.stage2(stage1["weights"], task_b, cache, cfg, args.seed)
    return report.report(args, cfg, protocol.describe(cfg, sizes), stage1, cache, results, check, plots, started)


if __name__ == "__main__":
    # a training script may keep freed memory for reuse (fewer page faults per step); a library
    # import never does this, since it holds for the whole process: see nnscratch/malloc.py
    malloc.keep_freed_memory()
    main()

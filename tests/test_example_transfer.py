"""The main job, examples/mnist_transfer.py, end to end in --quick mode (in-process).

Quick mode trains on tiny subsets, so only sanity is checked, never the accuracy targets of
the default run, and nothing about timing (the test machine may be busy).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from nnscratch import transfer
from nnscratch.models import keras_transfer_net

from strategies import PNG_MAGIC, is_fraction, library_rng_kept, load_example

STRATEGIES = {"scratch", "feature_extraction", "fine_tuning"}


@pytest.fixture(autouse=True)
def _keep_library_rng():
    """main() reseeds the library-wide generator; give the tests that run after these their
    random stream back untouched."""
    with library_rng_kept():
        yield


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the example once for all the tests of this file: (returned results, JSON, out dir)."""
    out = tmp_path_factory.mktemp("mnist_transfer")
    json_path = out / "r.json"
    with library_rng_kept():
        returned = load_example("mnist_transfer").main(["--quick", "--out", str(out), "--json", str(json_path)])
    return returned, json.loads(json_path.read_text()), out


def test_json_structure(quick_run):
    returned, results, _ = quick_run
    assert results["mode"] == "quick"
    assert results["backend"] in ("cython", "numpy")
    for key in ("protocol", "stage1", "feature_cache", "runs", "table", "targets", "plots", "total_time"):
        assert key in results, key

    stage1 = results["stage1"]
    assert stage1["reused"] is False
    assert is_fraction(stage1["test_accuracy"])
    assert stage1["test_accuracy"] > 0.5  # sanity: even 1 short epoch learns something

    cache = results["feature_cache"]
    assert cache["feature_shape"] == [32, 12, 12]  # keras_transfer_net's max-pool output
    for key in ("extract_time", "epoch_time_frozen_body", "epoch_time_cached", "speedup"):
        assert isinstance(cache[key], float) and math.isfinite(cache[key]) and cache[key] > 0, key

    budgets = results["protocol"]["budgets"]
    assert budgets == ["10", "100"]
    runs = results["runs"]
    assert {(r["strategy"], r["labels_per_class"]) for r in runs} == {(s, b) for s in STRATEGIES for b in budgets}
    for run in runs:
        assert is_fraction(run["accuracy"])
        assert run["time"] >= 0 and run["steps"] >= 1
        assert run["train_size"] == 5 * int(run["labels_per_class"])  # class-balanced subset of 5 classes

    assert set(results["table"]) == STRATEGIES
    for cells in results["table"].values():
        assert set(cells) == set(budgets)
        for cell in cells.values():
            assert is_fraction(cell["mean"]) and cell["sd"] >= 0 and cell["n"] == 1

    for name, target in results["targets"].items():
        assert set(target) >= {"value", "threshold", "met"}, name
        assert isinstance(target["met"], bool)
    assert results["total_time"] > 0
    # main() returns what it wrote
    assert json.loads(json.dumps(returned)) == results


def test_plots_are_pngs(quick_run):
    _, results, out = quick_run
    plots = results["plots"]
    assert set(plots) == {"accuracy", "filters"}
    for path in plots.values():
        path = Path(path)
        assert path.parent == out
        assert path.read_bytes()[:8] == PNG_MAGIC, path


def test_weights_file_loads(quick_run):
    _, results, out = quick_run
    path = Path(results["stage1"]["weights"])
    assert path.parent == out and path.is_file()
    model = transfer.load_model(path)
    assert model.names() == keras_transfer_net().names()  # conv1, relu1, conv2, ..., fc2
    assert model.conv1.weight.shape == (32, 1, 3, 3)
    assert model.fc2.weight.shape == (5, 128)
    logits = model.eval()(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert logits.shape == (2, 5) and np.all(np.isfinite(logits))


def test_reuse_weights_skips_pretraining(quick_run, tmp_path):
    """--weights PATH: stage 1 is skipped and the given file is used (and reported)."""
    _, results, _ = quick_run
    weights = results["stage1"]["weights"]
    again = load_example("mnist_transfer").main(["--quick", "--out", str(tmp_path), "--weights", weights])
    assert again["stage1"]["reused"] is True
    assert again["stage1"]["weights"] == weights
    assert not (tmp_path / "pretrained_0-4.safetensors").exists()
    # same weights, same 0-4 test images: the same stage-1 accuracy
    assert again["stage1"]["test_accuracy"] == results["stage1"]["test_accuracy"]

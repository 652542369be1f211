"""The main job, examples/mnist_transfer.py, end to end in --quick mode (in-process), and its
parts: the protocol's steps and learning-rate drop given to fit as epochs and a milestone
reproduce the hand-written step loop the example had before, bit for bit.

Quick mode trains on tiny subsets, so only sanity is checked, never the accuracy targets of
the default run, and nothing about timing (the test machine may be busy).
"""
import itertools
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer
from nnscratch.data import DataLoader
from nnscratch.models import keras_transfer_net

from strategies import PNG_MAGIC, REPO, is_fraction, library_rng_kept, load_example

STRATEGIES = {"scratch", "feature_extraction", "fine_tuning"}


@pytest.fixture(scope="module", autouse=True)
def _example_parts_importable():
    """The example's files import one another (mnist_transfer_protocol, _runs, _report), as they do
    when the script runs: Python puts the script's directory first on sys.path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "examples"))
        yield


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


def test_every_run_takes_the_protocols_steps(quick_run):
    """Each strategy trains for exactly the steps of its budget (fit's epochs of a fixed number of
    steps add up to them), and the head trained on cached features is the network's head."""
    _, results, _ = quick_run
    protocol = results["protocol"]
    for run in results["runs"]:
        assert run["steps"] == protocol[run["strategy"]]["steps"][run["labels_per_class"]], run
    check = results["feature_cache"]["check"]
    assert check["head_on_cached_features"] == check["whole_model_on_images"]


def test_schedule_splits_every_run_at_its_drop():
    import mnist_transfer_protocol as protocol
    for cfg in (protocol.DEFAULT, protocol.QUICK):
        for strategy in protocol.STRATEGIES:
            for steps in cfg[strategy]["steps"].values():
                epochs, per_epoch, milestones = protocol.schedule(steps, cfg["lr_drop_at"])
                assert epochs * per_epoch == steps and milestones == [int(cfg["lr_drop_at"] * steps) // per_epoch]
                assert milestones[0] * per_epoch == int(cfg["lr_drop_at"] * steps)
    assert protocol.schedule(60, 0.75) == (4, 15, [3]) and protocol.schedule(50, 0.75) == (50, 1, [37])
    with pytest.raises(ValueError, match="at least one step"):
        protocol.schedule(0, 0.75)


def step_loop(model, optimizer, loader, steps, drop_at):
    """The example's loop before it used fit: `steps` steps cycling over the loader's epochs, every
    group's learning rate divided by 10 after ``int(drop_at * steps)`` of them."""
    criterion, batches = nn.CrossEntropyLoss(), itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    for step, (x, y) in enumerate(itertools.islice(batches, steps)):
        if step == int(drop_at * steps):
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
        model.train()
        loss = criterion(model(x), y)
        assert math.isfinite(loss)
        optimizer.zero_grad()
        model.backward(criterion.backward(), need_input_grad=False)
        optimizer.step()


@pytest.mark.parametrize("steps", [1, 7, 8, 12])
def test_fit_with_a_milestone_reproduces_the_step_loop(steps):
    """stage2_batches + fit + MultiStepLR (how every stage-2 run trains) give the parameters of the hand
    loop bit for bit, also when fit's epochs end in the middle of the loader's (10 images, batches of 4)."""
    import mnist_transfer_protocol as protocol
    import mnist_transfer_runs as runs
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((10, 1, 2, 3)), rng.integers(0, 3, 10)
    cfg, opts = {"lr_drop_at": 0.75}, {"batch_size": 4, "steps": {10: steps}}

    def net():
        generator = np.random.default_rng(1)
        return nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("fc1", nn.Dense(6, 5, dtype=np.float64, generator=generator)), ("relu", nn.ReLU()),
            ("fc2", nn.Dense(5, 3, dtype=np.float64, generator=generator))]))
    by_hand, with_fit = net(), net()
    optimizer = nn.SGD(by_hand.parameters(), lr=0.1, momentum=0.9)
    step_loop(by_hand, optimizer, DataLoader(images, labels, batch_size=4, shuffle=True, seed=3), steps, 0.75)

    loader, epochs, milestones = runs.stage2_batches(images, labels, opts, 10, cfg, seed=3)
    assert (epochs, len(loader), milestones) == protocol.schedule(steps, 0.75)
    optimizer = nn.SGD(with_fit.parameters(), lr=0.1, momentum=0.9)
    scheduler = nn.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    history = nn.fit(with_fit, nn.CrossEntropyLoss(), optimizer, loader, epochs, scheduler=scheduler, progress=False)
    assert runs.steps(history) == steps
    assert [g["lr"] for g in optimizer.param_groups] == [0.1 * 0.1]
    for (name, mine), (_, theirs) in zip(with_fit.named_parameters(), by_hand.named_parameters()):
        assert mine.data.tobytes() == theirs.data.tobytes(), name

"""``benchmarks/bench.py --quick`` runs end to end and writes a complete JSON report.

Only the shape of the report is checked: keys present, figures positive and finite. Never a
speed: the machines running the tests are shared and noisy.
"""
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench.py"
ROWS = [
    "conv1_forward", "conv1_backward", "conv2_forward", "conv2_backward", "maxpool_forward",
    "maxpool_backward", "fc1_forward", "fc1_backward", "train_step", "inference_forward",
]
FLOP_ROWS = ["conv1_forward", "conv1_backward", "conv2_forward", "conv2_backward", "fc1_forward", "fc1_backward"]


def torch_available():
    if importlib.util.find_spec("torch") is None:
        return False
    # installed is not enough: it must import (bench.py shows "-" otherwise)
    done = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, timeout=120)
    return done.returncode == 0


def positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tmp.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=str(REPO),
    )
    assert done.returncode == 0, f"bench.py failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert out.is_file(), done.stdout
    data = json.loads(out.read_text())
    data["_stdout"] = done.stdout
    return data


@pytest.fixture(scope="module")
def impls():
    return ["cython", "numpy"] + (["torch"] if torch_available() else [])


def test_description_of_the_run(report):
    for key in ("settings", "machine", "versions", "blas", "threads", "backend", "kernels", "conventions",
                "rows", "sgemm_ceiling", "epoch_estimate_s", "memory"):
        assert key in report, key
    assert report["settings"]["quick"] is True and report["settings"]["batch"] == 64
    assert report["settings"]["dtype"] == "float32"
    assert isinstance(report["machine"]["cpu_model"], str) and report["machine"]["cpu_model"]
    assert positive(report["machine"]["available_cores"])
    assert positive(report["threads"]) and report["threads"] == report["settings"]["threads"]
    for package in ("python", "numpy", "nnscratch"):
        assert report["versions"][package]
    assert isinstance(report["blas"], list) and report["blas"]
    assert report["backend"] == "cython" and report["kernels"]["built"] is True


def test_every_row_has_positive_times(report, impls):
    assert set(ROWS) <= set(report["rows"])
    for key in ROWS:
        row = report["rows"][key]
        for impl in impls:
            assert positive(row["ms"][impl]), (key, impl, row["ms"])
            assert row["samples_ms"][impl] and all(positive(s) for s in row["samples_ms"][impl]), (key, impl)
        assert positive(row["speedup_numpy_over_cython"]), key
        if "torch" in impls:
            assert positive(row["ratio_cython_over_torch"]), key


def test_torch_column_follows_availability(report, impls):
    row = report["rows"]["train_step"]
    if "torch" in impls:
        assert report["versions"]["torch"]
    else:
        assert row["ms"]["torch"] is None and row["ratio_cython_over_torch"] is None


def test_flop_rows_and_sgemm_ceiling(report):
    for key in FLOP_ROWS:
        row = report["rows"][key]
        assert positive(row["flops"]) and positive(row["gflops"]["cython"]), key
        assert positive(row["pct_of_sgemm_ceiling"]), key
    # the documented convention: conv2 backward = 2× its forward, conv1 backward = 1×, fc1 backward = 2×
    rows = report["rows"]
    assert rows["conv1_forward"]["flops"] == 2 * 64 * 32 * 1 * 3 * 3 * 26 * 26
    assert rows["conv2_forward"]["flops"] == 2 * 64 * 64 * 32 * 3 * 3 * 24 * 24
    assert rows["conv1_backward"]["flops"] == rows["conv1_forward"]["flops"]
    assert rows["conv2_backward"]["flops"] == 2 * rows["conv2_forward"]["flops"]
    assert rows["fc1_backward"]["flops"] == 2 * rows["fc1_forward"]["flops"] == 4 * 64 * 9216 * 128
    for key in ("maxpool_forward", "maxpool_backward", "train_step", "inference_forward"):
        assert rows[key]["flops"] is None
    ceiling = report["sgemm_ceiling"]
    assert ceiling["shape_mkn"] == [36864, 288, 64]
    assert positive(ceiling["ms"]) and positive(ceiling["gflops"]) and positive(ceiling["conv2_forward_pct"])


def test_epoch_estimate_and_memory(report, impls):
    estimate = report["epoch_estimate_s"]
    assert estimate["steps"] == 938
    for impl in impls:
        assert positive(estimate[impl]), impl
        assert estimate[impl] == pytest.approx(report["rows"]["train_step"]["ms"][impl] * 938 / 1000)
    memory = report["memory"]
    for impl in impls:
        assert positive(memory["mib"][impl]), (impl, memory["details"].get(impl))
        assert memory["details"][impl]["impl"] == impl
    if "torch" in impls:
        assert positive(memory["ratio_cython_over_torch"])
    assert report["epoch_measured"] is None  # --epoch was not given


def test_prints_one_table_with_a_header(report):
    out = report["_stdout"]
    for text in ("machine:", "threads:", "versions:", "BLAS:", "conv1 forward", "conv2 backward", "max-pool 2 forward",
                 "fc1 backward", "train step", "inference forward", "estimated epoch", "peak RSS", "sgemm ceiling"):
        assert text in out, text

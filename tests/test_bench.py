"""``benchmarks/bench.py --quick`` runs end to end and writes a complete JSON report.

Only the shape of the report is checked: keys present, figures positive and finite. Never a
speed: the machines running the tests are shared and noisy.
"""
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

from nnscratch import reference

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
                "rows", "sgemm_ceiling", "epoch_estimate_s", "memory", "shapes"):
        assert key in report, key
    assert report["settings"]["quick"] is True and report["settings"]["batch"] == 64
    assert report["settings"]["dtype"] == "float32"
    assert report["settings"]["batch_source"] in ("mnist", "random")  # real images when MNIST is on the machine
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
                 "fc1 backward", "train step", "inference forward", "estimated epoch", "peak RSS", "sgemm ceiling",
                 "convolution shapes:", "64→64 56×56 3×3 p1", "3→64 224×224 7×7 s2 p3", "seed conv2 32→64 26×26 3×3"):
        assert text in out, text
    assert out.index("train step") < out.index("convolution shapes:")  # the shape table comes second


SHAPE_KEYS = ["c64_56", "c128_28", "c3_224", "c256_14", "conv1_b1", "conv1_b64", "conv1_b256", "conv2_b1", "conv2_b64",
              "conv2_b256"]


def test_shape_table_rows(report, impls):
    table = report["shapes"]
    assert table["quick"] is True and table["repeats"] >= 1 and positive(table["sgemm_ceiling_gflops"])
    assert table["sgemm_ceiling_gflops"] == report["sgemm_ceiling"]["gflops"]
    assert table["heap_grown_mib"] == 32  # --quick grows the heap a little, to run the code
    assert list(table["rows"]) == SHAPE_KEYS
    batches = {key: row["batch"] for key, row in table["rows"].items()}
    assert len({(row["label"], row["batch"]) for row in table["rows"].values()}) == len(SHAPE_KEYS)  # --quick: still distinct
    assert batches["conv1_b1"] < batches["conv1_b64"] < batches["conv1_b256"]
    for key, row in table["rows"].items():
        n, c, f, (oh, ow), (kh, kw) = row["batch"], row["in_channels"], row["out_channels"], row["output_hw"], row["kernel"]
        assert oh == reference.output_size(row["input_hw"][0], kh, row["stride"], row["padding"]), key
        assert row["flops"]["forward"] == 2 * n * f * c * kh * kw * oh * ow, key
        assert row["flops"]["forward_backward"] == 3 * row["flops"]["forward"], key
        for mode in ("forward", "forward_backward"):
            figures = row[mode]
            for impl in ["nnscratch"] + (["torch"] if "torch" in impls else []):
                assert positive(figures["ms"][impl]), (key, mode, impl)
                assert figures["faults_per_call"][impl] >= 0, (key, mode, impl)
                assert positive(figures["gflops"][impl]) and positive(figures["pct_of_sgemm_ceiling"][impl]), (key, mode, impl)
            if "torch" in impls:
                assert positive(figures["ratio_nnscratch_over_torch"]), (key, mode)
            else:
                assert figures["ms"]["torch"] is None and figures["ratio_nnscratch_over_torch"] is None
            if not table["algorithm_option"]:  # one algorithm timed
                assert figures["ms"]["direct"] is None and row["algorithm"] is None
    expected = {"c64_56": (64, 64, 56, 3, 1, 1), "c128_28": (128, 128, 28, 3, 1, 1), "c3_224": (3, 64, 224, 7, 2, 3),
                "c256_14": (256, 256, 14, 1, 1, 0), "conv1_b64": (1, 32, 28, 3, 1, 0), "conv2_b64": (32, 64, 26, 3, 1, 0)}
    for key, (c, f, size, k, stride, pad) in expected.items():
        row = table["rows"][key]
        assert (row["in_channels"], row["out_channels"], row["input_hw"], row["kernel"], row["stride"], row["padding"]) == (
            c, f, [size, size], [k, k], stride, pad), key


def test_fault_lines_name_only_the_calls_that_page_fault(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import shapes

    def row(label, forward_faults):
        return {"label": label, "batch": 16, "forward": {"faults_per_call": forward_faults},
                "forward_backward": {"faults_per_call": {"nnscratch": 0.0, "torch": 2.0}}}

    lines = shapes.fault_lines({"a": row("stem", {"nnscratch": 3.0, "torch": 25090.0}),
                                "b": row("pointwise", {"nnscratch": 0.0, "torch": None})})
    assert lines == ["page faults per call, stem N=16 forward: nnscratch 3, torch 25090"]


def test_shape_table_with_an_algorithm_option(monkeypatch, capsys):
    """When Conv2d takes algorithm=, the table names what "auto" chose and times "direct" beside it on
    the 3×3 stride-1 shapes (a stand-in Conv2d here: the option is another branch's work)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import nnscratch
    import shapes

    class Conv2d(nnscratch.Conv2d):
        def __init__(self, *args, algorithm="auto", **kwargs):
            super().__init__(*args, **kwargs)
            self.algorithm = algorithm

        def algorithm_for(self, input_shape):
            assert len(input_shape) == 4
            return "winograd" if self.kernel_size == (3, 3) and self.stride == (1, 1) else "direct"

    fake = types.SimpleNamespace(Conv2d=Conv2d, manual_seed=nnscratch.manual_seed, use_backend=nnscratch.use_backend)
    assert shapes.has_algorithm_option(fake)
    rows = shapes.measure(fake, None, repeats=1, warmup=0, quick=True)
    shapes.add_ceiling(rows, 100.0)
    for key, row in rows.items():
        three_by_three = row["kernel"] == [3, 3] and row["stride"] == 1
        assert row["algorithm"] == ("winograd" if three_by_three else "direct"), key
        for mode in ("forward", "forward_backward"):
            assert (row[mode]["ms"]["direct"] is not None) == three_by_three, (key, mode)
            assert positive(row[mode]["ms"]["nnscratch"])
    shapes.print_table({"rows": rows, "algorithm_option": True, "sgemm_ceiling_gflops": 100.0, "repeats": 1, "quick": True,
                        "heap_grown_mib": 0})
    out = capsys.readouterr().out
    assert "auto" in out and "winograd" in out and "fwd direct" in out


def test_conv_algorithms_quick(tmp_path, impls):
    """``benchmarks/conv_algorithms.py --quick`` (the seed's conv2 each way) runs end to end: every implementation
    timed, its float32 errors finite and small (F(4×4)'s are the largest, about 6e-6). Never a speed."""
    out = tmp_path / "conv_algorithms.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "conv_algorithms.py"), "--quick", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert done.returncode == 0, f"conv_algorithms.py failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    data = json.loads(out.read_text())
    names = [f"{backend} {algorithm}" for backend in ("cython", "numpy") for algorithm in ("direct", "winograd", "winograd_2x2")]
    names += ["torch"] if "torch" in impls else []
    assert data["implementations"] == names
    assert data["settings"]["quick"] is True and data["settings"]["threads"] == 1
    assert data["flops"]["forward"] == 2 * data["settings"]["batch"] * 64 * 32 * 3 * 3 * 24 * 24
    assert data["flops"]["forward_backward"] == 3 * data["flops"]["forward"]
    for name in names:
        for mode in ("forward", "forward_backward"):
            assert positive(data["modes"][mode]["ms"][name]) and positive(data["modes"][mode]["gflops"][name]), (name, mode)
        errors = data["errors"][name]
        assert all(positive(errors[which]) and errors[which] < 1e-4 for which in ("y", "grad_x", "grad_w")), (name, errors)
    assert "seed conv2: Conv2d(32, 64, 3)" in done.stdout and "cython winograd_2x2" in done.stdout


def test_stem_script_shows_the_grown_heap_removes_page_faults(impls):
    """``benchmarks/stem.py`` runs its three malloc states in one process; once the heap has grown,
    nnscratch's stem forward takes fewer page faults than at the start (measured: 792 -> 0). Never a speed."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stem.py"), "--calls", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert done.returncode == 0, f"stem.py failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.splitlines()[1:4]
    assert all(line.strip().startswith(("glibc", "keep_freed")) for line in lines), done.stdout
    assert "the im2col product alone, 64×147 @ 147×200704" in done.stdout

    def faults(line, name):
        words = line.split()
        return int(words[words.index(name) + 3])

    assert faults(lines[2], "nnscratch") < faults(lines[0], "nnscratch"), done.stdout
    assert ("torch" in lines[0]) == ("torch" in impls), done.stdout

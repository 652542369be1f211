"""examples/transfer_limits.py end to end in --quick mode (in-process): the JSON, the figures, the
exact constructions. Quick mode trains on tiny subsets, so no accuracy is checked, only sanity."""
import importlib.util
import json
from pathlib import Path

import pytest

import nnscratch
from nnscratch.training import set_generator_state

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "transfer_limits.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("transfer_limits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = nnscratch.rng.default_generator().bit_generator.state
    out = tmp_path_factory.mktemp("transfer_limits")
    try:
        returned = module.main(["--quick", "--out", str(out), "--json", str(out / "r.json")])
    finally:  # main() reseeds the library-wide generator: give the later tests their stream back
        nnscratch.manual_seed(0)
        set_generator_state(nnscratch.rng.default_generator(), state)
    return returned, json.loads((out / "r.json").read_text()), out


def _fraction(value):
    return isinstance(value, float) and 0.0 <= value <= 1.0


def test_json_holds_every_table(quick_run):
    returned, results, _ = quick_run
    assert results["mode"] == "quick" and results["seeds"] == [0]
    assert json.loads(json.dumps(returned)) == results
    run = results["runs"][0]
    shifts = ["none", "inverted", "rotated 90°", "permuted", "x/255"]
    assert list(run["zero_shot"]) == shifts and all(_fraction(v) for v in run["zero_shot"].values())
    assert list(run["shifts"]) == shifts
    for row in [*run["shifts"].values(), *run["new_tasks"].values()]:
        assert set(row) == {"frozen", "fine-tuned", "scratch"} and all(_fraction(v) for v in row.values())
    assert set(run["new_tasks"]) == {"parity of 0-4", "digits 5-9"}
    frozen = run["random_labels"]["frozen_to_digits_5_9"]
    assert len(frozen) == 4 and all(_fraction(v) for v in frozen.values())
    cell = results["summary"]["shifts"]["inverted"]["frozen"]
    assert cell["n"] == 1 and cell["sd"] == 0.0 and cell["min"] == cell["max"] == cell["mean"]


def test_exact_constructions_hold(quick_run):
    checks = quick_run[1]["runs"][0]["constructions"]
    assert checks["negated_conv1_bit_identical"] is True
    assert checks["bias_negated_too_max_logit_gap"] > 0
    assert checks["inverted_pixels_max_logit_gap"] < 1e-4
    assert checks["dense_permuted_same_predictions"] is True
    assert checks["dense_permuted_max_logit_gap"] < 1e-4


def test_figures_are_pngs(quick_run):
    _, results, out = quick_run
    assert set(results["plots"]) == {"mismatch", "relatedness", "sources"}
    for path in results["plots"].values():
        assert Path(path).parent == out and Path(path).read_bytes()[:8] == PNG_MAGIC

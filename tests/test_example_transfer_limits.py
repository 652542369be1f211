"""examples/transfer_limits.py end to end in --quick mode (in-process): the JSON, the figures, the
exact constructions. Quick mode trains on tiny subsets, so no accuracy is checked, only sanity."""
import json
from pathlib import Path

import pytest

from strategies import PNG_MAGIC, is_fraction, library_rng_kept, load_example


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    module = load_example("transfer_limits")
    out = tmp_path_factory.mktemp("transfer_limits")
    with library_rng_kept():
        returned = module.main(["--quick", "--out", str(out), "--json", str(out / "r.json")])
    return returned, json.loads((out / "r.json").read_text()), out


def test_json_holds_every_table(quick_run):
    returned, results, _ = quick_run
    assert results["mode"] == "quick" and results["seeds"] == [0]
    assert json.loads(json.dumps(returned)) == results
    run = results["runs"][0]
    shifts = ["none", "inverted", "rotated 90°", "permuted", "x/255"]
    assert list(run["zero_shot"]) == shifts and all(is_fraction(v) for v in run["zero_shot"].values())
    assert list(run["shifts"]) == shifts
    for row in [*run["shifts"].values(), *run["new_tasks"].values()]:
        assert set(row) == {"frozen", "fine-tuned", "scratch"} and all(is_fraction(v) for v in row.values())
    assert set(run["new_tasks"]) == {"parity of 0-4", "digits 5-9"}
    frozen = run["random_labels"]["frozen_to_digits_5_9"]
    assert len(frozen) == 4 and all(is_fraction(v) for v in frozen.values())
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

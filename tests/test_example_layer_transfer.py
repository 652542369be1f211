"""examples/layer_transfer.py end to end in --quick mode (in-process): the JSON, the figures, the
mechanics. Quick mode trains on tiny subsets, so no accuracy is checked and no timing."""
import json
from pathlib import Path

import pytest

import nnscratch
from nnscratch.transfer import study

from strategies import PNG_MAGIC, library_rng_kept, load_example


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    threads = nnscratch.get_num_threads()
    out = tmp_path_factory.mktemp("layer_transfer")
    with library_rng_kept():
        returned = load_example("layer_transfer").main(["--quick", "--seeds", "2", "--no-progress", "--out", str(out),
                                                        "--json", str(out / "r.json")])
    assert nnscratch.get_num_threads() == threads   # run_study restores the kernel thread count
    return returned, json.loads((out / "r.json").read_text()), out


def test_json_holds_every_run_and_the_summaries(quick_run):
    returned, results, _ = quick_run
    assert results["mode"] == "quick" and results["mechanics_hold"] is True
    assert [one["seed"] for one in results["seeds"]] == [0, 1]
    points = list(study.QUICK.points)
    for one in results["seeds"]:
        assert {(r["treatment"], r["n"]) for r in one["runs"]} == {(t, n) for t in study.TREATMENTS for n in points}
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in one["runs"])
    assert set(results["table"]) == {"baseline", *study.TREATMENTS}
    assert set(results["table"]["AnB"]) == {str(n) for n in points}
    assert set(results["findings"]) == {"co_adaptation", "specificity", "boost"}
    assert all(results["findings"][name]["seeds"] == 2 for name in results["findings"])
    assert json.loads(json.dumps(returned)) == results


def test_figures_are_pngs(quick_run):
    _, results, out = quick_run
    assert set(results["plots"]) == {"layer_transfer", "filters"}
    for path in map(Path, results["plots"].values()):
        assert path.parent == out and path.read_bytes()[:8] == PNG_MAGIC, path


def test_refuses_zero_seeds(capsys):
    with pytest.raises(SystemExit):
        load_example("layer_transfer").main(["--seeds", "0"])
    assert "at least one seed" in capsys.readouterr().err

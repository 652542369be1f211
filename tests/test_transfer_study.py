"""nnscratch.transfer.study: the AnB/BnB protocol on tiny synthetic tasks (fast; no accuracy claims)."""
import numpy as np
import pytest

import nnscratch as nn
from nnscratch import transfer
from nnscratch.transfer import study as ts
from nnscratch.training import set_generator_state

TINY = ts.Schedule(epochs=1, batch_size=8, lr=0.01)


@pytest.fixture(autouse=True)
def _keep_library_rng():
    """The protocol reseeds the library generator; give later tests their stream back."""
    state = nn.rng.default_generator().bit_generator.state
    yield
    nn.manual_seed(0)
    set_generator_state(nn.rng.default_generator(), state)


def fake_mnist(n=200, seed=0):
    """(images, labels) shaped like MNIST: uint8 (n, 28, 28), labels 0-9 each present."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), np.arange(n) % 10


def tiny_tasks(b_per_class=4):
    return ts.make_tasks(fake_mnist(200, 0), fake_mnist(60, 1), b_per_class, seed=0)


def trained_sources():
    nets = {}
    for key, seed in (("A", 1), ("B", 2), ("R", 3)):
        nn.manual_seed(seed)
        nets[key] = ts.transfer_net()
    tasks = tiny_tasks()
    ts.train(nets["A"], *tasks["A_train"], TINY, seed=0)
    ts.train(nets["B"], *tasks["B_train"], TINY, seed=0)
    return nets, tasks


def test_network_has_five_transfer_points_and_logits():
    net = ts.transfer_net()
    assert ts.weight_layers(net) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
    assert ts.transfer_points(net) == [1, 2, 3, 4, 5]
    out = net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert out.shape == (2, 5)
    # every transfer point is a valid cut: what feeds the next weight layer
    for n in ts.transfer_points(net):
        cut = ts.weight_layers(net)[n]
        features = transfer.extract_features(net, np.zeros((2, 1, 28, 28), dtype=np.float32), before=cut)
        assert net[cut:](features).shape == (2, 5)


def test_make_tasks_splits_digits_and_draws_b_per_class():
    tasks = tiny_tasks(b_per_class=3)
    images, labels = fake_mnist(200, 0)
    assert len(tasks["A_train"][1]) == int(np.isin(labels, ts.DIGITS_A).sum())
    assert np.bincount(tasks["B_train"][1]).tolist() == [3, 3, 3, 3, 3]     # relabelled 0-4, 3 each
    assert set(tasks["A_test"][1].tolist()) == set(tasks["B_test"][1].tolist()) == {0, 1, 2, 3, 4}
    limited = ts.make_tasks(fake_mnist(200, 0), fake_mnist(60, 1), 3, seed=0, a_limit=7, test_limit=5)
    assert len(limited["A_train"][1]) == 7 and len(limited["B_test"][1]) == 5


def test_copy_layers_copies_bits_into_new_arrays():
    nn.manual_seed(1)
    source = ts.transfer_net()
    nn.manual_seed(2)
    target = ts.transfer_net()
    assert not ts.bit_identical(source, target, 1)
    assert ts.copy_layers(source, target, 3) == ["conv1", "conv2", "conv3"]
    assert ts.bit_identical(source, target, 3) and not ts.bit_identical(source, target, 4)
    target.conv1.weight.data[0, 0, 0, 0] += 1.0   # a copy, not a view: the source is untouched
    assert not np.array_equal(source.conv1.weight.data, target.conv1.weight.data)
    assert ts.copy_layers(source, target, 0) == []


def test_copy_layers_refuses_a_wrong_depth_or_shape():
    source, target = ts.transfer_net(), ts.transfer_net()
    with pytest.raises(ValueError, match=r"n=6 layers cannot be transferred; expected 0..5"):
        ts.copy_layers(source, target, 6)
    with pytest.raises(ValueError, match=r"conv1.weight has shape \(8, 1, 3, 3\) in the source and \(6, 1, 3, 3\)"):
        ts.copy_layers(source, ts.transfer_net(channels=(6, 8, 8, 16)), 1)


def test_transferred_net_freezes_only_the_copied_layers_and_shares_the_upper_init():
    nn.manual_seed(1)
    source = ts.transfer_net()
    frozen = ts.transferred_net(source, 2, fine_tune=False, seed=5)
    tuned = ts.transferred_net(source, 2, fine_tune=True, seed=5)
    assert transfer.frozen_parameters(frozen) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert transfer.frozen_parameters(tuned) == []
    assert ts.bit_identical(source, frozen, 2) and ts.bit_identical(source, tuned, 2)
    # same seed: the same random layers above the copied ones, whatever the source
    other = ts.transferred_net(ts.transfer_net(), 2, fine_tune=False, seed=5)
    assert np.array_equal(other.conv3.weight.data, frozen.conv3.weight.data)
    assert np.array_equal(other.fc2.weight.data, frozen.fc2.weight.data)


@pytest.mark.parametrize("treatment", ts.TREATMENTS)
def test_every_treatment_keeps_its_mechanics(treatment):
    sources, tasks = trained_sources()
    before = {key: net.state_dict() for key, net in sources.items()}
    before = {key: {k: v.copy() for k, v in sd.items()} for key, sd in before.items()}
    run = ts.run_treatment(treatment, 2, sources, tasks, TINY, seed=7)
    assert run["copied_bit_identical"] and run["frozen_unchanged"]
    expected = [] if treatment.endswith("+") else ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert run["frozen"] == expected
    assert 0.0 <= run["accuracy"] <= 1.0 and run["n"] == 2 and run["seed"] == 7
    for key, net in sources.items():   # the sources never move
        for name, value in net.state_dict().items():
            assert np.array_equal(value, before[key][name]), (key, name)


def test_cached_features_give_the_same_net_as_training_through_the_frozen_body():
    """The frozen run trains only the layers above the cut on cached features; the same training
    through the whole network (frozen prefix included) ends with the same parameters."""
    sources, tasks = trained_sources()
    seed, n = 9, 3
    via_cache = ts.transferred_net(sources["A"], n, fine_tune=False, seed=seed)
    cut = ts.weight_layers(via_cache)[n]
    features = transfer.extract_features(via_cache, tasks["B_train"][0], before=cut,
                                         transform=nn.data.prepare_images)
    ts.train(via_cache[cut:], features, tasks["B_train"][1], TINY, seed, transform=None)
    whole = ts.transferred_net(sources["A"], n, fine_tune=False, seed=seed)
    ts.train(whole, *tasks["B_train"], TINY, seed)
    for (name, a), (_, b) in zip(via_cache.named_parameters(), whole.named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-6, err_msg=name)
    assert not np.array_equal(whole.fc1.weight.data, ts.transferred_net(sources["A"], n, fine_tune=False,
                                                                         seed=seed).fc1.weight.data)


def test_run_treatment_reports_a_frozen_layer_that_changed(monkeypatch):
    """The check can fail: a (simulated) bug that writes into a frozen layer is reported."""
    sources, tasks = trained_sources()
    real_extract = transfer.extract_features

    def extract_and_corrupt(model, images, before, **kwargs):
        features = real_extract(model, images, before, **kwargs)
        model.conv1.weight.data = model.conv1.weight.data + 1.0
        return features

    monkeypatch.setattr(transfer, "extract_features", extract_and_corrupt)
    run = ts.run_treatment("AnB", 2, sources, tasks, TINY, seed=3)
    assert run["copied_bit_identical"] and not run["frozen_unchanged"]
    assert not ts.bit_identical(sources["A"], ts.transferred_net(sources["A"], 0, fine_tune=False, seed=3), 1)


def test_run_treatment_refuses_an_unknown_treatment():
    with pytest.raises(ValueError, match=r"unknown treatment 'ABn'; expected one of \('BnB'"):
        ts.run_treatment("ABn", 1, {}, {}, TINY, seed=0)


def fake_results():
    """Two seeds of made-up accuracies with a known outcome for every finding."""
    def seed(s, base, bnb, anb, anb_plus):
        runs = [{"treatment": t, "n": n, "accuracy": acc[n - 1], "copied_bit_identical": True,
                 "frozen_unchanged": True}
                for t, acc in (("BnB", bnb), ("AnB", anb), ("AnB+", anb_plus), ("BnB+", [base] * 3),
                               ("RnB", [0.2] * 3))
                for n in (1, 2, 3)]
        return {"seed": s, "base": {"A": 0.99, "B": base}, "runs": runs, "sources_unchanged": True}
    return {"seeds": [seed(0, 0.90, [0.90, 0.85, 0.89], [0.92, 0.90, 0.80], [0.93, 0.95, 0.94]),
                      seed(1, 0.92, [0.93, 0.93, 0.92], [0.93, 0.91, 0.85], [0.922, 0.93, 0.94])]}


def test_findings_measure_each_seed():
    found = ts.findings(fake_results())
    co = found["co_adaptation"]
    assert [r["holds"] for r in co["per_seed"]] == [True, False]      # dip 5 points in seed 0, none in seed 1
    assert co["per_seed"][0]["at"] == 2 and co["per_seed"][0]["dip"] == pytest.approx(0.05)
    assert co["held_in"] == 1 and co["seeds"] == 2 and not co["holds_in_every_seed"]
    spec = found["specificity"]
    assert [r["drop"] for r in spec["per_seed"]] == pytest.approx([0.12, 0.08])
    assert spec["holds_in_every_seed"]
    assert spec["per_seed"][0]["gap_last"] == pytest.approx(0.09)
    boost = found["boost"]
    assert [r["margin"] for r in boost["per_seed"]] == pytest.approx([0.03, 0.002])
    assert [r["holds"] for r in boost["per_seed"]] == [True, False]   # 0.2 points is within NOISE


def test_table_and_accuracies_and_text():
    results = fake_results()
    baseline, curves = ts.accuracies(results)
    assert baseline == [0.90, 0.92]
    assert curves["AnB"][3] == [0.80, 0.85]
    summary = ts.table(results)
    assert summary["baseline"]["mean"] == pytest.approx(0.91)
    assert summary["baseline"]["sd"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert summary["AnB"][3]["mean"] == pytest.approx(0.825)
    text = ts.format_table(results)
    assert "baseline B (n=0): 91.00 ± 1.41" in text
    assert "AnB         92.50 ± 0.71    90.50 ± 0.71    82.50 ± 3.54" in text.splitlines()
    assert ts.mechanics_hold(results)
    results["seeds"][1]["runs"][4]["frozen_unchanged"] = False
    assert not ts.mechanics_hold(results)


def test_quick_study_runs_every_treatment_and_keeps_the_mechanics():
    config = ts.StudyConfig(b_per_class=2, pretrain=TINY, target=TINY, points=(1, 5), a_limit=40, test_limit=20)
    seen = []
    results, networks = ts.run_study(fake_mnist(200, 0), fake_mnist(60, 1), config, seeds=[0, 1], on_run=seen.append)
    assert len(seen) == 2 * (1 + 2 * len(ts.TREATMENTS))
    assert [one["seed"] for one in results["seeds"]] == [0, 1] and set(networks) == {0, 1}
    assert {(r["treatment"], r["n"]) for r in results["seeds"][0]["runs"]} == {
        (t, n) for t in ts.TREATMENTS for n in (1, 5)}
    assert ts.mechanics_hold(results)
    assert config.runs_per_seed() == 2 + 2 * 5
    again, _ = ts.run_study(fake_mnist(200, 0), fake_mnist(60, 1), config, seeds=[1])
    assert [r["accuracy"] for r in again["seeds"][0]["runs"]] == [r["accuracy"] for r in results["seeds"][1]["runs"]]

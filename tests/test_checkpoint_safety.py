"""Hostile and damaged checkpoints (issue 10, items 1-3) and checkpoints of a diverged run (item 8).

Every hostile file is written byte for byte as an attacker would (safetensors with any JSON
header, NaN literals included), loaded into a model, optimizer, loader and generators, and
must be refused with a ValueError naming the file while leaving all of them exactly as they were.
"""
import copy
import json
import math
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
import safetensors.numpy

import nnscratch as nn
from nnscratch import rng
from nnscratch.training import checkpoint
from nnscratch.training.history import History
from nnscratch.training import ParametersDivergedError, load_checkpoint, save_checkpoint


class Loader:
    """A loader of fixed batches with the epoch counter fit and checkpoints use."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.epoch += 1
        return iter(self.batches)


def make_net(seed=1, dropout_generator=None):
    nn.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(4, 3), drop=nn.Dropout(0.5, generator=dropout_generator),
                                     fc2=nn.Linear(3, 2)))


def trained_setup(seed=1, dropout_generator=None):
    """A net whose optimizer has momentum buffers, and a loader at epoch 3."""
    net = make_net(seed, dropout_generator)
    optimizer = nn.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for param in net.parameters():
        param.grad = np.ones_like(param.data)
    optimizer.step()
    loader = Loader([])
    loader.epoch = 3
    return net, optimizer, loader


@pytest.fixture
def good(tmp_path):
    """(path, arrays, header) of a valid checkpoint of a net whose dropout has its own MT19937."""
    net, optimizer, loader = trained_setup(seed=2, dropout_generator=np.random.Generator(np.random.MT19937(7)))
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, net, optimizer, epoch=3, history=History(train_loss=[1.0, 0.5, 0.25]), train_loader=loader)
    arrays, header = nn.serialization.load_file(path)
    return path, arrays, header


def write_raw(path, arrays, header):
    """A safetensors file with `header` as JSON exactly as given (NaN literals allowed)."""
    text = json.dumps(header, allow_nan=True)
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                                metadata={"nnscratch": text})
    return path


def snapshot(net, optimizer, loader):
    return {
        "params": {name: p.data.copy() for name, p in net.named_parameters()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "default_rng": rng.default_generator().bit_generator.state,
        "drop_generator": net.drop.generator,
        "drop_state": None if net.drop.generator is None else net.drop.generator.bit_generator.state,
        "loader_epoch": loader.epoch,
        "numpy_global": np.random.get_state()[1].copy(),
    }


def assert_unchanged(before, net, optimizer, loader):
    after = snapshot(net, optimizer, loader)
    for name, value in before["params"].items():
        np.testing.assert_array_equal(after["params"][name], value, err_msg=name)
        assert after["params"][name].dtype == value.dtype
    assert after["optimizer"]["param_groups"] == before["optimizer"]["param_groups"]
    assert sorted(after["optimizer"]["state"]) == sorted(before["optimizer"]["state"])
    for index, state in before["optimizer"]["state"].items():
        np.testing.assert_array_equal(after["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    assert json.dumps(rng.state_to_json(after["default_rng"])) == json.dumps(rng.state_to_json(before["default_rng"]))
    assert after["drop_generator"] is before["drop_generator"]
    assert after["loader_epoch"] == before["loader_epoch"]
    np.testing.assert_array_equal(after["numpy_global"], before["numpy_global"])


def _set(path, value):
    """A mutation setting header[path[0]][path[1]]... = value (deleting it when value is DELETE)."""
    def mutate(header, arrays):
        target = header
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = copy.deepcopy(value)
    return mutate


DELETE = object()
HUGE = {"__ndarray__": [1], "dtype": "(16000,16000)f8"}


def _mt19937(**changes):
    state = rng.state_to_json(np.random.MT19937(0).state)
    state["state"].update(changes)
    return state


def _array(name, value=None):
    def mutate(header, arrays):
        if value is DELETE:
            del arrays[name]
        else:
            arrays[name] = value(arrays) if callable(value) else value
    return mutate


HOSTILE = {
    # item 1: a file names a function
    "bit generator 'test'": (_set(["rng", "default", "bit_generator"], "test"), "unknown bit generator 'test'"),
    "bit generator 'seed'": (_set(["rng", "modules", "drop", "bit_generator"], "seed"), "unknown bit generator 'seed'"),
    "bit generator 'RandomState'": (_set(["rng", "default", "bit_generator"], "RandomState"), "unknown bit generator"),
    "bit generator of another class": (_set(["rng", "default"], rng.state_to_json(np.random.SFC64(0).state)),
                                       "SFC64 bit generator.*PCG64"),
    # item 2: sizes and types in the header
    "huge dtype in a generator key": (_set(["rng", "modules", "drop", "state", "key"], HUGE), "dtype must be '<u4'"),
    "huge dtype as lr": (_set(["optimizer", "param_groups", 0, "lr"], HUGE), r"param_groups\[0\]\.lr"),
    "huge dtype in optimizer state": (_set(["optimizer", "state"], {"0": {"x": HUGE}}), r"state\.0\.x"),
    "huge dtype in history": (_set(["history", "train_loss"], [HUGE]), r"train_loss\[0\]"),
    "generator key too long": (_set(["rng", "modules", "drop", "state", "key"],
                                    {"__ndarray__": [1] * 10_000, "dtype": "<u4"}), "624 integers"),
    "MT19937 position past its key": (_set(["rng", "modules", "drop"], _mt19937(pos=100_000)), r"\[0, 624\]"),
    "PCG64 state above 128 bits": (_set(["rng", "default", "state", "state"], 2**200), "128|340282366920938463"),
    "generator field missing": (_set(["rng", "default", "state", "inc"], DELETE), "fields"),
    "generator state a string": (_set(["rng", "default"], "PCG64"), "JSON object"),
    "history a list": (_set(["history"], [1, 2]), "history"),
    "history string loss": (_set(["history", "train_loss"], ["0.5"]), r"train_loss\[0\]"),
    "history negative step count": (_set(["history", "epoch_batches"], [-1]), r"epoch_batches\[0\]"),
    "history negative time": (_set(["history", "total_time"], -5.0), "total_time"),
    "history unknown key": (_set(["history", "bogus"], 1), "unknown keys"),
    # item 3: values a resumed run would misuse
    "negative epoch": (_set(["epoch"], -10**9), r"epoch must be an integer in \[0, 1000000\], got -1000000000"),
    "billion epochs": (_set(["epoch"], 10**9), "epoch must be an integer"),
    "epoch as string": (_set(["epoch"], "3"), "epoch must be an integer"),
    "epoch as float": (_set(["epoch"], 3.0), "epoch must be an integer"),
    "epoch as bool": (_set(["epoch"], True), "epoch must be an integer"),
    "NaN lr": (_set(["optimizer", "param_groups", 0, "lr"], math.nan), r"lr must lie in \[0, inf\), got nan|NaN"),
    "infinite lr": (_set(["optimizer", "param_groups", 0, "lr"], math.inf), "lr must lie|Infinity"),
    "negative lr": (_set(["optimizer", "param_groups", 0, "lr"], -1), r"lr must lie in \[0, inf\), got -1"),
    "string lr": (_set(["optimizer", "param_groups", 0, "lr"], "fast"), "lr must be a real number, got str 'fast'"),
    "negative momentum": (_set(["optimizer", "param_groups", 0, "momentum"], -5), r"momentum must lie in \[0, 1\)"),
    "momentum of 1": (_set(["optimizer", "param_groups", 0, "momentum"], 1.0), r"momentum must lie in \[0, 1\)"),
    "dampening above 1": (_set(["optimizer", "param_groups", 0, "dampening"], 2.0), "dampening"),
    "negative weight decay": (_set(["optimizer", "param_groups", 0, "weight_decay"], -1e-3), "weight_decay"),
    "nesterov as string": (_set(["optimizer", "param_groups", 0, "nesterov"], "yes"), "nesterov must be True or False"),
    "group with other parameters": (_set(["optimizer", "param_groups", 0, "params"], [0, 1, 2, 9]), "groups"),
    "group with an extra key": (_set(["optimizer", "param_groups", 0, "betas"], 0.9), "groups"),
    "two groups for one": (lambda header, arrays: header["optimizer"]["param_groups"].append(
        copy.deepcopy(header["optimizer"]["param_groups"][0])), "expected 1 groups"),
    "optimizer of another class": (_set(["optimizer", "class"], "Adam"), "holds a 'Adam' state"),
    "optimizer state index not a number": (_set(["optimizer", "state"], {"x": {}}), "parameter index"),
    "negative loader epoch": (_set(["train_loader_epoch"], -1), "train_loader_epoch"),
    "loader epoch as string": (_set(["train_loader_epoch"], "1"), "train_loader_epoch"),
    "unknown header key": (_set(["run_this"], "os.system"), "unknown keys"),
    "format version 2": (_set(["format_version"], 2), "format version 2"),
    "generator for a missing module": (_set(["rng", "modules", "conv9"], rng.state_to_json(np.random.PCG64(0).state)),
                                       "module 'conv9', which the model lacks"),
    "generator for a layer that draws none": (_set(["rng", "modules", "fc1"], rng.state_to_json(np.random.PCG64(0).state)),
                                              "fc1.*draws from none"),
    # missing keys: a ValueError naming the file, not a KeyError
    "missing epoch": (_set(["epoch"], DELETE), r"missing keys \['epoch'\]"),
    "missing rng": (_set(["rng"], DELETE), r"missing keys \['rng'\]"),
    "missing default generator": (_set(["rng", "default"], DELETE), "missing keys"),
    "missing optimizer": (_set(["optimizer"], DELETE), "no optimizer state"),
    "missing param groups": (_set(["optimizer", "param_groups"], DELETE), "missing keys"),
    "missing lr": (_set(["optimizer", "param_groups", 0, "lr"], DELETE), "groups"),
    # arrays against the model and the optimizer
    "transposed weight": (_array("model.fc1.weight", lambda a: a["model.fc1.weight"].T.copy()),
                          r"model.fc1.weight is float32 \(4, 3\), the model's parameter is float32 \(3, 4\)"),
    "float64 weight": (_array("model.fc1.weight", lambda a: a["model.fc1.weight"].astype(np.float64)),
                       "model.fc1.weight is float64"),
    "missing weight": (_array("model.fc2.bias", DELETE), r"missing arrays \['model.fc2.bias'\]"),
    "extra model array": (_array("model.fc3.weight", np.zeros(3, np.float32)), "model.fc3.weight' is not a parameter"),
    "extra array": (_array("code.run", np.zeros(1, np.uint8)), "unexpected array 'code.run'"),
    "optimizer array with a bad index": (_array("optimizer.x.momentum_buffer", np.zeros(3, np.float32)),
                                         "unexpected array 'optimizer.x.momentum_buffer'"),
    "optimizer array past the parameters": (_array("optimizer.99.momentum_buffer", np.zeros(3, np.float32)),
                                            "state index 99"),
    "optimizer array of another name": (_array("optimizer.0.exp_avg", np.zeros((3, 4), np.float32)),
                                        "exactly a 'momentum_buffer'"),
    "momentum buffer of the wrong shape": (_array("optimizer.1.momentum_buffer", np.zeros(5, np.float32)),
                                           r"momentum buffer 1 has shape \(5,\), parameter has \(3,\)"),
    "integer momentum buffer": (_array("optimizer.1.momentum_buffer", np.zeros(3, np.int64)), "floating-point"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_checkpoint_is_refused_and_changes_nothing(case, good, tmp_path):
    mutate, match = HOSTILE[case]
    _, arrays, header = good
    mutate(header, arrays)
    path = write_raw(tmp_path / "hostile.safetensors", arrays, header)

    net, optimizer, loader = trained_setup(seed=5)  # its dropout draws from the library generator
    rng.default_generator().random(3)  # a state that differs from the file's
    before = snapshot(net, optimizer, loader)
    with pytest.raises(ValueError, match=match) as error:
        load_checkpoint(path, net, optimizer, loader)
    assert "hostile.safetensors" in str(error.value)
    assert_unchanged(before, net, optimizer, loader)


def test_the_good_checkpoint_loads_into_the_same_setup(good):
    """The fixture the hostile cases mutate is itself accepted (so their errors come from the mutations)."""
    path, _, _ = good
    net, optimizer, loader = trained_setup(seed=5)
    epoch, history = load_checkpoint(path, net, optimizer, loader)
    assert epoch == 3 and history.train_loss == [1.0, 0.5, 0.25] and loader.epoch == 3
    assert isinstance(net.drop.generator.bit_generator, np.random.MT19937)
    reference, *_ = trained_setup(seed=2)
    for (name, a), (_, b) in zip(net.named_parameters(), reference.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_a_file_naming_numpy_functions_runs_none_of_them(good, tmp_path):
    """Before the allow-list, 'seed' reseeded NumPy's global generator and 'test' ran NumPy's test suite."""
    _, arrays, header = good
    header["rng"]["modules"]["drop"]["bit_generator"] = "seed"
    path = write_raw(tmp_path / "seed.safetensors", arrays, header)
    np.random.seed(123)
    expected = np.random.get_state()[1].copy()
    net, optimizer, loader = trained_setup()
    with pytest.raises(ValueError, match="may name only PCG64, PCG64DXSM, MT19937, Philox, SFC64"):
        load_checkpoint(path, net, optimizer, loader)
    np.testing.assert_array_equal(np.random.get_state()[1], expected)


def test_a_huge_dtype_in_the_header_allocates_nothing(good, tmp_path):
    """A dtype of 8 MB per element (the report's was 2 GB) is refused before NumPy sees it."""
    _, arrays, header = good
    header["rng"]["modules"]["drop"]["state"]["key"] = {"__ndarray__": [1, 2], "dtype": "(1000,1000)f8"}
    path = write_raw(tmp_path / "dtype.safetensors", arrays, header)
    net, optimizer, loader = trained_setup()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"array dtype must be '<u4', got '\(1000,1000\)f8'"):
            load_checkpoint(path, net, optimizer, loader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"loading a refused checkpoint peaked at {peak} bytes"


@pytest.mark.parametrize("name", list(rng.BIT_GENERATORS))
def test_every_allowed_bit_generator_round_trips(name, tmp_path):
    generator = np.random.Generator(rng.BIT_GENERATORS[name](11))
    generator.random(5)  # mid-stream (Philox and MT19937 hold a buffer position)
    net, optimizer, loader = trained_setup(dropout_generator=generator)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, net, optimizer, epoch=1, train_loader=loader)
    expected = generator.random(4)

    fresh, fresh_optimizer, fresh_loader = trained_setup(seed=3)  # no generator of its own: one is created
    load_checkpoint(path, fresh, fresh_optimizer, fresh_loader)
    assert type(fresh.drop.generator.bit_generator) is rng.BIT_GENERATORS[name]
    np.testing.assert_array_equal(fresh.drop.generator.random(4), expected)


def test_out_of_range_generator_positions_are_refused():
    """NumPy accepts these and then reads outside its buffers (an MT19937 pos of 100000 segfaults)."""
    state = rng.state_to_json(np.random.Philox(0).state)
    state["buffer_pos"] = -1
    with pytest.raises(ValueError, match=r"where\.buffer_pos: expected an integer in \[0, 4\], got -1"):
        rng.state_from_json(state, "where")
    with pytest.raises(ValueError, match=r"pos: expected an integer in \[0, 624\], got 625"):
        rng.state_from_json(_mt19937(pos=625), "where")
    assert rng.state_from_json(_mt19937(pos=624), "where")[0] is np.random.MT19937


def test_save_refuses_a_generator_a_checkpoint_could_not_restore(tmp_path):
    net, optimizer, loader = trained_setup(dropout_generator=np.random.Generator(np.random.SFC64(0)))

    class Custom(np.random.SFC64):
        pass

    net.drop.generator = np.random.Generator(Custom(0))
    with pytest.raises(ValueError, match="drop uses a Custom bit generator"):
        save_checkpoint(tmp_path / "ck.safetensors", net, optimizer, epoch=1)
    with pytest.raises(ValueError, match="epoch"):
        save_checkpoint(tmp_path / "ck.safetensors", make_net(), optimizer, epoch=-1)
    assert not list(tmp_path.iterdir())


def test_header_size_limit_names_the_file_and_the_limit(good):
    path, _, _ = good
    net, optimizer, loader = trained_setup()
    before = snapshot(net, optimizer, loader)
    with pytest.raises(ValueError, match=r"good.safetensors.*exceeds the limit of 1000 bytes"):
        load_checkpoint(path, net, optimizer, loader, max_header_bytes=1000)
    assert_unchanged(before, net, optimizer, loader)
    load_checkpoint(path, net, optimizer, loader, max_header_bytes=100_000)
    assert not np.array_equal(net.fc1.weight.data, before["params"]["fc1.weight"])


def test_history_length_is_bounded(monkeypatch):
    monkeypatch.setattr(nn.training.history, "MAX_ENTRIES", 3)
    History.from_dict({"train_loss": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="batch_loss has 4 entries, more than the limit of 3"):
        History.from_dict({"batch_loss": [1.0] * 4})


def test_a_failure_while_applying_puts_everything_back(good):
    """Transactional even past the checks: a loader whose set_epoch fails (after the model,
    optimizer and generators were set) leaves all of them as they were."""
    path, _, _ = good

    class BrokenLoader(Loader):
        def set_epoch(self, epoch):
            raise RuntimeError("disk on fire")

    net, optimizer, _ = trained_setup(seed=5)
    loader = BrokenLoader([])
    before = snapshot(net, optimizer, loader)
    with pytest.raises(RuntimeError, match="disk on fire"):
        load_checkpoint(path, net, optimizer, loader)
    assert_unchanged(before, net, optimizer, loader)
    assert net.drop.generator is None


def test_sgd_refuses_what_load_state_dict_refuses():
    params = list(make_net().parameters())
    for kwargs, match in [(dict(lr="fast"), "lr must be a real number"), (dict(lr=math.nan), "lr must lie"),
                          (dict(lr=0.1, momentum=1.0), r"momentum must lie in \[0, 1\)"),
                          (dict(lr=0.1, dampening=-0.5), "dampening")]:
        with pytest.raises(ValueError, match=match):
            nn.SGD(params, **kwargs)


# ---------------------------------------------------------------------------
# item 8: fit does not checkpoint a diverged model
# ---------------------------------------------------------------------------


def regression_run(tmp_path, extreme_at_epoch, epochs=3, **fit_kwargs):
    """A linear regression whose last batch of `extreme_at_epoch` has inputs of 1e6: the loss of
    that batch is finite (it is computed before the step), the step blows the weights up to ~1e11."""
    generator = np.random.default_rng(0)
    x = generator.standard_normal((8, 4)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32))
    normal = [(x[:4], y[:4]), (x[4:], y[4:])]
    extreme = (np.full((4, 4), 1e6, np.float32), np.zeros((4, 1), np.float32))

    class Loader_(Loader):
        def __iter__(self):
            self.epoch += 1
            return iter(normal + [extreme] if self.epoch == extreme_at_epoch else normal)

    nn.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 1)))
    optimizer = nn.SGD(net.parameters(), lr=0.01, momentum=0.9)
    path = tmp_path / "ck.safetensors"
    saved = {}

    def remember(epoch, history):
        saved[epoch] = {name: p.data.copy() for name, p in net.named_parameters()}

    history = None
    error = None
    try:
        history = nn.fit(net, nn.MSELoss(), optimizer, Loader_([None] * 2), epochs, checkpoint=path,
                         progress=False, callback=remember, **fit_kwargs)
    except ParametersDivergedError as exc:
        error = exc
    return net, path, saved, history, error


def test_fit_keeps_the_last_good_checkpoint_when_the_parameters_explode(tmp_path):
    net, path, saved, _, error = regression_run(tmp_path, extreme_at_epoch=2)
    assert error is not None, "fit went on after the weights exploded"
    assert isinstance(error, nn.TrainingDivergedError)
    assert error.epoch == 2 and error.parameter == "fc.weight" and error.largest > 1e6
    message = str(error)
    assert "epoch 2" in message and "fc.weight" in message and "max_param_abs=1e+06" in message
    assert "ck.safetensors" in message and f"{error.largest:.3g}" in message
    assert np.max(np.abs(net.fc.weight.data)) > 1e6  # the model did diverge

    fresh = nn.Sequential(OrderedDict(fc=nn.Linear(4, 1)))
    epoch, history = load_checkpoint(path, fresh, nn.SGD(fresh.parameters(), lr=0.01, momentum=0.9))
    assert epoch == 1 and history.epochs == 1
    for name, param in fresh.named_parameters():
        np.testing.assert_array_equal(param.data, saved[1][name], err_msg=name)


def test_fit_refuses_to_checkpoint_non_finite_parameters_whatever_the_bound(tmp_path):
    class Sabotaged(nn.SGD):
        steps = 0

        def step(self):
            super().step()
            Sabotaged.steps += 1
            if Sabotaged.steps == 4:  # the last step of epoch 2, whose loss was finite
                self.param_groups[0]["params"][0].data[0, 0] = np.nan

    nn.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 1)))
    x = np.ones((2, 4), np.float32)
    loader = Loader([(x, np.zeros((2, 1), np.float32))] * 2)
    path = tmp_path / "ck.safetensors"
    with pytest.raises(ParametersDivergedError, match="after epoch 2 the parameter fc.weight holds NaN"):
        nn.fit(net, nn.MSELoss(), Sabotaged(net.parameters(), lr=0.01), loader, 3, checkpoint=path,
               progress=False, max_param_abs=None)
    assert load_checkpoint(path, nn.Sequential(OrderedDict(fc=nn.Linear(4, 1))))[0] == 1


def test_the_bound_is_the_callers(tmp_path):
    _, path, _, history, error = regression_run(tmp_path, extreme_at_epoch=2, max_param_abs=None)
    assert error is None and history.epochs == 3  # large but finite weights pass when asked
    assert load_checkpoint(path, nn.Sequential(OrderedDict(fc=nn.Linear(4, 1))))[0] == 3
    _, _, _, history, error = regression_run(tmp_path, extreme_at_epoch=None)
    assert error is None and history.epochs == 3  # a healthy run is untouched by the default
    with pytest.raises(ValueError, match="max_param_abs must be a positive number or None, got 'big'"):
        regression_run(tmp_path, extreme_at_epoch=None, max_param_abs="big")


def test_find_diverged_parameter():
    net = make_net()
    assert checkpoint.find_diverged_parameter(net, 1e6) is None
    net.fc2.bias.data[1] = -2e6
    assert checkpoint.find_diverged_parameter(net, 1e6) == ("fc2.bias", 2e6)
    assert checkpoint.find_diverged_parameter(net, None) is None
    net.fc1.weight.data[0, 0] = np.inf
    name, largest = checkpoint.find_diverged_parameter(net, None)
    assert name == "fc1.weight" and largest == np.inf

"""Checkpoints of :func:`nnscratch.fit`, from which a run resumes *exactly*.

A checkpoint is one :mod:`nnscratch.io.safetensors` file (safetensors: it cannot carry code)
holding the arrays ``model.<parameter name>`` and ``optimizer.<index>.<state name>`` (e.g.
``optimizer.0.momentum_buffer``), and in its JSON header everything else a resumed run
needs: the number of epochs completed, the :class:`~nnscratch.History`, the optimizer's
hyper-parameters, the learning-rate scheduler's state, the state of the library's random generator and of every layer's own
generator, and the training loader's epoch counter (which fixes its shuffle order).
"""
import re

import numpy as np

from .. import rng as _rng
from ..io import safetensors as serialization
from ..checks import int_in_range, short_repr
from ..nn.state import load_arrays
from .history import History

CHECKPOINT_FORMAT = "nnscratch.checkpoint"
"""Value of the ``"format"`` key of a checkpoint's JSON header."""
CHECKPOINT_VERSION = 1
MODEL_PREFIX = "model."
"""What a checkpoint's model arrays are named with: ``model.<parameter name>``."""

MAX_EPOCH = 1_000_000
"""Largest ``epoch`` a checkpoint may hold (a resumed :func:`nnscratch.fit` runs up to it)."""
MAX_LOADER_EPOCH = 2**62
"""Largest ``train_loader_epoch`` (the loader's own count of passes, which seeds its shuffle)."""
MAX_ENTRIES = 100_000
"""Most optimizer parameter groups, per-parameter states or list items a checkpoint may hold."""

_REQUIRED = {"format", "format_version", "epoch", "rng"}
_OPTIONAL = {"history", "optimizer", "scheduler", "train_loader_epoch"}
_INDEX = re.compile(r"[0-9]{1,9}")
_INDEXED = re.compile(r"[0-9]{1,9}\.[A-Za-z_][A-Za-z0-9_]{0,99}")

__all__ = ["find_diverged_parameter", "load_checkpoint", "save_checkpoint", "set_generator_state"]


def save_checkpoint(path, model, optimizer, *, epoch, history=None, train_loader=None, scheduler=None):
    """
    Write everything :func:`fit` needs to resume after `epoch` completed epochs, atomically.

    Arrays: ``model.<name>`` for each parameter, ``optimizer.<index>.<key>`` for each array
    of the optimizer's per-parameter state. JSON header: format and version, ``epoch``, the
    history, the optimizer's param groups and non-array state, the `scheduler`'s ``state_dict``
    (numbers only, e.g. ``LambdaLR``'s function is not saved), the library generator's state
    and each module's own generator state (keyed by module name), and the loader's epoch.
    """
    epoch = int_in_range(epoch, 0, MAX_EPOCH, f"save_checkpoint({str(path)!r}): epoch")
    generators = {"the library generator": _rng.default_generator(), **_module_generators(model)}
    for name, generator in generators.items():
        if type(generator.bit_generator) not in _rng.BIT_GENERATORS.values():
            raise ValueError(f"save_checkpoint({str(path)!r}): {name} uses a {type(generator.bit_generator).__name__} "
                             f"bit generator; a checkpoint can restore only {', '.join(_rng.BIT_GENERATORS)}")
    arrays = {MODEL_PREFIX + name: param.data for name, param in model.named_parameters()}
    optimizer_header = None
    if optimizer is not None:
        state_dict = optimizer.state_dict()
        scalars = {}
        for index, state in state_dict.get("state", {}).items():
            for key, value in state.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optimizer.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = _to_json(value)
        optimizer_header = {
            "class": type(optimizer).__name__,
            "param_groups": _to_json(state_dict["param_groups"]),
            "state": scalars,
        }
    header = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "history": (history or History()).as_dict(),
        "optimizer": optimizer_header,
        "scheduler": None if scheduler is None else {"class": type(scheduler).__name__,
                                                     "state": _to_json(scheduler.state_dict())},
        "rng": {
            "default": _rng.state_to_json(_rng.default_generator().bit_generator.state),
            "modules": {name: _rng.state_to_json(generator.bit_generator.state)
                        for name, generator in _module_generators(model).items()},
        },
        "train_loader_epoch": _loader_epoch(train_loader),
    }
    serialization.save_file(path, arrays, header)


def load_checkpoint(path, model, optimizer=None, train_loader=None, *, scheduler=None, max_header_bytes=None):
    """
    Restore a :func:`save_checkpoint` file into `model` (and `optimizer`, `train_loader`, `scheduler`,
    the random generators); return ``(epoch, history)``. A checkpoint written with a scheduler is
    refused when an `optimizer` but no `scheduler` is given (the resumed run would keep the
    learning rate where it was instead of following the schedule).

    The file is checked completely before anything changes, and then everything changes at once
    (or, should a step still fail, is put back), so a refused file leaves the model, optimizer,
    loader and generators exactly as they were. Checked: the arrays against the model (the same
    parameter names, shapes and dtypes) and the optimizer; every header entry against its schema
    (``epoch`` an int in [0, :data:`MAX_EPOCH`], the history, the optimizer's hyper-parameters,
    the scheduler's class and state (as its ``load_state_dict`` checks it: keys, ranges, one rate
    per parameter group),
    each generator state: one of :data:`nnscratch.rng.BIT_GENERATORS`, with that class's fields,
    ranges and array sizes). A ``ValueError`` names the file, the entry, the value found and what
    was expected. `max_header_bytes` caps the JSON header (default: that of
    :func:`nnscratch.io.safetensors.load_file`); a very long history may need it raised.
    """
    limits = {} if max_header_bytes is None else {"max_header_bytes": max_header_bytes}
    arrays, header = serialization.load_file(path, **limits)
    plan = _checked_plan(path, arrays, header, model, optimizer, scheduler)
    _apply(path, plan, model, optimizer, train_loader, scheduler)
    return plan["epoch"], plan["history"]


def _checked_plan(path, arrays, header, model, optimizer, scheduler):
    """Check the whole checkpoint against the objects it will restore; return what to set."""
    if header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an nnscratch checkpoint (header format {short_repr(header.get('format'))})")
    if header.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {short_repr(header.get('format_version'))}, "
                         f"this nnscratch reads version {CHECKPOINT_VERSION}")
    _check_keys(header, _REQUIRED, _REQUIRED | _OPTIONAL, f"{path}: the checkpoint header")
    epoch = int_in_range(header["epoch"], 0, MAX_EPOCH, f"{path}: epoch")
    loader_epoch = header.get("train_loader_epoch")
    if loader_epoch is not None:
        loader_epoch = int_in_range(loader_epoch, 0, MAX_LOADER_EPOCH, f"{path}: train_loader_epoch")
    saved_history = header.get("history")
    history = History.from_dict({} if saved_history is None else saved_history, where=f"{path}: history")

    model_state, optimizer_arrays = _split_arrays(path, arrays, model)
    optimizer_state = None
    if optimizer is not None:
        optimizer_state = _optimizer_state(path, header.get("optimizer"), optimizer_arrays, optimizer)
    scheduler_state = _scheduler_state(path, header.get("scheduler"), scheduler, optimizer)
    generators = _generator_plan(path, header["rng"], model)
    return {"epoch": epoch, "history": history, "model": model_state, "optimizer": optimizer_state,
            "scheduler": scheduler_state, "generators": generators, "loader_epoch": loader_epoch}


def _split_arrays(path, arrays, model):
    """({parameter name: array}, {(index, name): array}), the model's arrays checked against the model by
    :func:`nnscratch.nn.state.load_arrays` (the same names and shapes) and, for a bit-identical resume, the
    same dtypes."""
    model_state, optimizer_arrays, problems = {}, {}, []
    for key, array in arrays.items():
        kind, _, rest = key.partition(".")
        if key.startswith(MODEL_PREFIX):
            model_state[key[len(MODEL_PREFIX):]] = array
        elif kind == "optimizer" and _INDEXED.fullmatch(rest):
            index, _, name = rest.partition(".")
            optimizer_arrays[int(index), name] = array
        else:
            problems.append(f"unexpected array {short_repr(key)}")
    report = load_arrays(model, model_state, strict=False, source=str(path), caller="load_checkpoint", check_only=True)
    params = dict(model.named_parameters())
    wrong = [name for name, _, _ in report.mismatched] + [n for n in report.loaded if model_state[n].dtype != params[n].dtype]
    problems += [f"{MODEL_PREFIX}{name} is {model_state[name].dtype} {model_state[name].shape}, the model's parameter is "
                 f"{params[name].dtype} {params[name].shape}" for name in wrong]
    problems += [f"{short_repr(MODEL_PREFIX + name)} is not a parameter of the model" for name in report.unexpected]
    if report.missing:
        problems.append(f"missing arrays {[MODEL_PREFIX + name for name in report.missing][:10]} (the model's parameters)")
    if problems:
        raise ValueError(f"{path}: the checkpoint does not match the model (load_state_dict): "
                         + "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))
    return model_state, optimizer_arrays


def _optimizer_state(path, saved, arrays, optimizer):
    """The ``state_dict`` to give `optimizer`, from the header's plain JSON and the arrays."""
    where = f"{path}: optimizer"
    if saved is None:
        raise ValueError(f"{where}: the checkpoint holds no optimizer state")
    _check_keys(saved, {"class", "param_groups", "state"}, {"class", "param_groups", "state"}, where)
    if saved["class"] != type(optimizer).__name__:
        raise ValueError(f"{where}: the checkpoint holds a {short_repr(saved['class'])} state, "
                         f"the optimizer is a {type(optimizer).__name__}")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) > MAX_ENTRIES or not all(isinstance(g, dict) for g in groups):
        raise ValueError(f"{where}: param_groups must be a list of at most {MAX_ENTRIES} objects")
    groups = [{key: _plain(value, f"{where}.param_groups[{i}].{key}") for key, value in group.items()}
              for i, group in enumerate(groups)]
    scalars = saved["state"]
    if not isinstance(scalars, dict) or len(scalars) > MAX_ENTRIES:
        raise ValueError(f"{where}: state must be an object of at most {MAX_ENTRIES} entries")
    state = {}
    for index, values in scalars.items():
        if not _INDEX.fullmatch(index) or not isinstance(values, dict):
            raise ValueError(f"{where}: state entry {short_repr(index)} must be a parameter index with an object")
        state.setdefault(int(index), {}).update(
            {key: _plain(value, f"{where}.state.{index}.{key}") for key, value in values.items()})
    for (index, name), array in arrays.items():
        state.setdefault(index, {})[name] = array
    return {"param_groups": groups, "state": state}


def _scheduler_state(path, saved, scheduler, optimizer):
    """The scheduler's attributes to set (checked by the scheduler), or ``None`` without a scheduler."""
    where = f"{path}: scheduler"
    if scheduler is None:
        if saved is not None and optimizer is not None:
            saved_class = short_repr(saved.get("class") if isinstance(saved, dict) else saved)
            raise ValueError(f"{where}: the checkpoint was written with a {saved_class} "
                             "learning-rate scheduler; pass the same scheduler (fit(..., scheduler=...) or "
                             "load_checkpoint(..., scheduler=...)) so the resumed run follows its schedule")
        return None
    if saved is None:
        raise ValueError(f"{where}: the checkpoint holds no scheduler state (it was written without a scheduler)")
    _check_keys(saved, {"class", "state"}, {"class", "state"}, where)
    if saved["class"] != type(scheduler).__name__:
        raise ValueError(f"{where}: the checkpoint holds a {short_repr(saved['class'])} state, "
                         f"the scheduler is a {type(scheduler).__name__}")
    state = saved["state"]
    if not isinstance(state, dict) or len(state) > 100:
        raise ValueError(f"{where}: state must be an object of at most 100 entries, got {short_repr(state)}")
    if not hasattr(scheduler, "checked_state"):  # not an nnscratch scheduler: plain values, checked by it on loading
        return {key: _plain(value, f"{where}.state.{key}") for key, value in state.items()}
    try:
        return scheduler.checked_state(state, where=f"{where}.state")
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{where}: the scheduler refuses the checkpoint's state: {exc}") from exc


def _generator_plan(path, saved, model):
    """[(generator or None, module or None, bit generator class, state)] for every saved state."""
    _check_keys(saved, {"default", "modules"}, {"default", "modules"}, f"{path}: rng")
    default = _rng.default_generator()
    cls, state = _rng.state_from_json(saved["default"], f"{path}: rng.default",
                                      expected=type(default.bit_generator))
    plan = [(default, None, cls, state)]
    if not isinstance(saved["modules"], dict):
        raise ValueError(f"{path}: rng.modules must be an object, got {type(saved['modules']).__name__}")
    modules, generators = dict(model.named_modules()), _module_generators(model)
    for name, data in saved["modules"].items():
        if name not in modules:
            raise ValueError(f"{path}: the checkpoint has a generator for module {short_repr(name)}, which the model lacks")
        generator = generators.get(name)
        if generator is None and not hasattr(modules[name], "generator"):
            raise ValueError(f"{path}: the checkpoint has a generator for module {name!r}, a "
                             f"{type(modules[name]).__name__}, which draws from none")
        expected = None if generator is None else type(generator.bit_generator)
        cls, state = _rng.state_from_json(data, f"{path}: rng.modules[{name!r}]", expected=expected)
        plan.append((generator, modules[name], cls, state))
    return plan


def _apply(path, plan, model, optimizer, train_loader, scheduler):
    """Set everything `plan` holds; if any step fails, put back what was set and re-raise."""
    old_params = {name: param.data for name, param in model.named_parameters()}
    old_optimizer = optimizer.state_dict() if plan["optimizer"] is not None else None
    old_scheduler = scheduler.state_dict() if plan["scheduler"] is not None else None
    old_generators = [(generator, module, getattr(module, "generator", None),
                       None if generator is None else generator.bit_generator.state)
                      for generator, module, _, _ in plan["generators"]]
    old_loader_epoch = getattr(train_loader, "epoch", None)
    try:
        if old_optimizer is not None:
            try:  # first, so that when the optimizer refuses its state (after checking it all) nothing has changed
                optimizer.load_state_dict(plan["optimizer"])
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}: the optimizer refuses the checkpoint's state: {exc}") from exc
        if old_scheduler is not None:
            try:
                scheduler.load_state_dict(plan["scheduler"])
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}: the scheduler refuses the checkpoint's state: {exc}") from exc
        model.load_state_dict(plan["model"])
        for generator, module, cls, state in plan["generators"]:
            if generator is None:  # the fresh model draws from the library generator: give it its own
                generator = module.generator = np.random.Generator(cls(0))
            set_generator_state(generator, state)
        if plan["loader_epoch"] is not None and hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(plan["loader_epoch"])
    except BaseException:
        for name, param in model.named_parameters():
            param.data = old_params[name]
        if old_optimizer is not None:
            optimizer.load_state_dict(old_optimizer)
        if old_scheduler is not None:
            scheduler.load_state_dict(old_scheduler)
        for generator, module, module_generator, state in old_generators:
            if generator is None:
                module.generator = module_generator
            else:
                set_generator_state(generator, state)
        if hasattr(train_loader, "epoch"):
            train_loader.epoch = old_loader_epoch
        raise


def find_diverged_parameter(model, max_abs):
    """``(name, largest |value|)`` of the first parameter of `model` holding a NaN, an infinity or a
    value of magnitude above `max_abs` (``None``: no magnitude limit), or ``None`` when all are
    sound. :func:`nnscratch.fit` asks this before writing a checkpoint."""
    for name, param in model.named_parameters():
        if param.data.size == 0:
            continue
        largest = float(np.max(np.abs(param.data)))  # NaN if any value is NaN
        if not np.isfinite(largest) or (max_abs is not None and largest > max_abs):
            return name, largest
    return None


def set_generator_state(generator, state):
    """Set a NumPy ``Generator``'s bit-generator state in place (for the library generator use
    ``set_generator_state(nnscratch.rng.default_generator(), state)``: :func:`nnscratch.manual_seed`
    replaces that object, so a reference kept from before would be stale)."""
    generator.bit_generator.state = state


def _module_generators(model):
    """{module name: generator} for the modules that have their own random generator."""
    return {
        name: module.generator
        for name, module in model.named_modules()
        if getattr(module, "generator", None) is not None and hasattr(module.generator, "bit_generator")
    }


def _loader_epoch(loader):
    epoch = getattr(loader, "epoch", None)
    return int(epoch) if epoch is not None else None


def _to_json(value):
    """NumPy scalars to plain JSON numbers, recursively (the optimizer's hyper-parameters)."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_keys(data, required, allowed, where):
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(data).__name__}")
    missing, unknown = sorted(required - set(data)), sorted(set(data) - allowed)
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"missing keys {missing}"] if missing else []) + ([f"unknown keys {short_repr(unknown)}"] if unknown else [])))




def _plain(value, where):
    """A JSON scalar (number, bool, null, short string) or a list of at most MAX_ENTRIES ints."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= 100:
        return value
    if (isinstance(value, list) and len(value) <= MAX_ENTRIES
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return value
    raise ValueError(f"{where}: expected a number, a bool, a short string or a list of ints, got {short_repr(value)}")



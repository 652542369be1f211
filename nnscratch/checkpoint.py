"""Checkpoints of :func:`nnscratch.fit`, from which a run resumes *exactly*.

A checkpoint is one :mod:`nnscratch.serialization` file (safetensors: it cannot carry code)
holding the arrays ``model.<parameter name>`` and ``optimizer.<index>.<state name>`` (e.g.
``optimizer.0.momentum_buffer``), and in its JSON header everything else a resumed run
needs: the number of epochs completed, the :class:`~nnscratch.History`, the optimizer's
hyper-parameters, the state of the library's random generator and of every layer's own
generator, and the training loader's epoch counter (which fixes its shuffle order).
"""
import numpy as np

from . import rng as _rng
from . import serialization
from .history import History

CHECKPOINT_FORMAT = "nnscratch.checkpoint"
CHECKPOINT_VERSION = 1

__all__ = ["load_checkpoint", "save_checkpoint", "set_generator_state"]


def save_checkpoint(path, model, optimizer, *, epoch, history=None, train_loader=None):
    """
    Write everything :func:`fit` needs to resume after `epoch` completed epochs, atomically.

    Arrays: ``model.<name>`` for each parameter, ``optimizer.<index>.<key>`` for each array
    of the optimizer's per-parameter state. JSON header: format and version, ``epoch``, the
    history, the optimizer's param groups and non-array state, the library generator's state
    and each module's own generator state (keyed by module name), and the loader's epoch.
    """
    arrays = {f"model.{name}": param.data for name, param in model.named_parameters()}
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
        "epoch": int(epoch),
        "history": (history or History()).as_dict(),
        "optimizer": optimizer_header,
        "rng": {
            "default": _to_json(_rng.default_generator().bit_generator.state),
            "modules": {name: _to_json(generator.bit_generator.state)
                        for name, generator in _module_generators(model).items()},
        },
        "train_loader_epoch": _loader_epoch(train_loader),
    }
    serialization.save_file(path, arrays, header)


def load_checkpoint(path, model, optimizer=None, train_loader=None):
    """
    Restore a :func:`save_checkpoint` file into `model` (and `optimizer`, `train_loader`, the
    random generators); return ``(epoch, history)``. The model must have the same parameter
    names and shapes, the optimizer the same parameter groups.
    """
    arrays, header = serialization.load_file(path)
    if header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an nnscratch checkpoint (header format {header.get('format')!r})")
    if header.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {header.get('format_version')!r}, "
                         f"this nnscratch reads version {CHECKPOINT_VERSION}")

    model_state, optimizer_state = {}, {}
    for key, array in arrays.items():
        kind, _, rest = key.partition(".")
        if kind == "model":
            model_state[rest] = array
        elif kind == "optimizer":
            index, _, name = rest.partition(".")
            optimizer_state.setdefault(int(index), {})[name] = array
        else:
            raise ValueError(f"{path}: unexpected array {key!r} in a checkpoint")
    model.load_state_dict(model_state)

    if optimizer is not None:
        saved = header.get("optimizer")
        if saved is None:
            raise ValueError(f"{path}: the checkpoint holds no optimizer state")
        if saved["class"] != type(optimizer).__name__:
            raise ValueError(f"{path}: the checkpoint holds a {saved['class']} state, "
                             f"the optimizer is a {type(optimizer).__name__}")
        for index, scalars in saved.get("state", {}).items():
            optimizer_state.setdefault(int(index), {}).update(_from_json(scalars))
        optimizer.load_state_dict({"param_groups": _from_json(saved["param_groups"]), "state": optimizer_state})

    set_generator_state(_rng.default_generator(), _from_json(header["rng"]["default"]))
    generators = _module_generators(model)
    for name, state in header["rng"]["modules"].items():
        state = _from_json(state)
        module = dict(model.named_modules()).get(name)
        if module is None:
            raise ValueError(f"{path}: the checkpoint has a generator for module {name!r}, which the model lacks")
        if name not in generators:  # the fresh model draws from the library generator: give it its own
            module.generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
            generators[name] = module.generator
        set_generator_state(generators[name], state)

    loader_epoch = header.get("train_loader_epoch")
    if loader_epoch is not None and hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(loader_epoch)
    return int(header["epoch"]), History.from_dict(header.get("history") or {})


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
    """NumPy scalars and arrays (e.g. an MT19937 key) to JSON; arrays become tagged objects."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value

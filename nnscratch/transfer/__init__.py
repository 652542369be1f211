"""Transfer learning: reuse what a network learned on one task for another.

A convolutional network trained on a large task learns, layer after layer, features of
growing abstraction: the first convolutions respond to edges and blobs, the next ones to
strokes and corners, the dense layers to whole shapes of the task's classes. Only the last
layers are specific to the task; the rest is a general-purpose *feature extractor*. The seed
article distinguishes three ways of using that:

1. **Pre-training.** Train a network on a large task (e.g. the seed's ``Net`` on all of
   MNIST) and keep its weights (:func:`save_weights`).
2. **Fine-tuning.** Load the pre-trained weights into a network for the new task
   (:func:`load_weights`, :func:`load_model`, :func:`from_torch_state_dict`), replace the
   layers that do not fit it -- the output layer (:func:`replace_head`) and, if the images
   differ, the input layer (:func:`adapt_input_channels`) -- and train on the new task,
   usually first the new head alone on a frozen body, then everything with a smaller
   learning rate for the pre-trained layers (:func:`freeze`, :func:`param_groups`,
   :func:`fine_tune`).
3. **Feature extraction.** Keep the pre-trained network frozen and use the activations of
   one of its layers as the input representation of another model
   (:func:`extract_features`, :func:`cut`, :func:`extend`).

Freezing
--------
A parameter is frozen when its ``requires_grad`` is false (:class:`nnscratch.Parameter`). A
frozen parameter is *never changed*: ``Conv2d`` and ``Dense`` do not compute its gradient,
:class:`nnscratch.SGD` skips it entirely at every step (no update, no momentum, no weight
decay -- even if the optimizer was built, and had momentum buffers, before the freeze), and
``Sequential.backward(grad, need_input_grad=False)`` (what :func:`nnscratch.fit` calls) stops
at the lowest layer holding a trainable parameter, so the frozen layers below it do no
backward work at all. :func:`frozen_snapshot` and :func:`assert_frozen_unchanged` verify
the promise bit for bit.

Weight files
------------
:func:`save_weights` writes a safetensors file through :mod:`nnscratch.io.safetensors`.
Unlike ``pickle`` (and so ``torch.save`` or ``np.load(allow_pickle=True)``), which runs
whatever code its author embedded when a file is loaded, a safetensors file is a JSON header
followed by raw little-endian array bytes: it *cannot carry code*, so loading weights found
on the internet can at worst fail. Loading validates the header size, the JSON, every dtype
(numeric only: no object arrays), shape and byte offset before building any array, and
refuses a malformed or hostile file with a :class:`ValueError`. Writes are atomic
(temporary file, fsync, rename): an interrupted save never leaves a half-written file.

The file's JSON header (format ``"nnscratch-weights"``, version :data:`FORMAT_VERSION`)
records the nnscratch version, the architecture -- every layer's name, class and
hyper-parameters, see :func:`architecture` -- and the input shape, so :func:`load_model`
rebuilds the network from the file alone. Rebuilding only instantiates the fixed set of
layer classes of :data:`LAYER_CLASSES` with type-checked arguments; nothing in a file can
name a function to call.

PyTorch
-------
nnscratch layers carry PyTorch's names and weight layouts (``conv1.weight`` is
``(out_channels, in_channels, kH, kW)``, ``fc1.weight`` is ``(out_features, in_features)``),
so a PyTorch ``state_dict`` loads directly (:func:`from_torch_state_dict`) and an nnscratch
model exports to one (:func:`to_torch_state_dict`). This module never imports torch.

Example
-------
The seed's three modes with this module::

    import nnscratch as nn
    from nnscratch import transfer

    net = nn.models.seed_net()                      # 1. pre-training (e.g. on digits 0-4), then
    transfer.save_weights(net, "pretrained.safetensors", input_shape=(1, 28, 28))

    net = transfer.load_model("pretrained.safetensors")          # 2. fine-tuning on digits 5-9
    transfer.replace_head(net, num_classes=5)
    history = transfer.fine_tune(net, nn.NLLLoss(), loader, head_epochs=1, full_epochs=2,
                                 lr=0.01, body_lr=0.001)

    features = transfer.extract_features(net, images, before="fc2")   # 3. (N, 128) features
"""
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..io import safetensors as serialization
from ..nn.activation import LogSoftmax, ReLU, Softmax
from ..nn.container import Sequential
from ..nn.conv import Conv2d
from ..nn.dense import Dense
from ..nn.dropout import Dropout
from ..nn.flatten import Flatten
from ..nn.module import Parameter
from ..optim import SGD
from ..nn.pooling import AvgPool2d, MaxPool2d
from ..training import History, fit, forward_in_batches

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LAYER_CLASSES", "LoadReport",
    "adapt_input_channels", "architecture", "assert_frozen_unchanged", "build_model", "cut", "extend",
    "extract_features", "fine_tune", "freeze", "freeze_to", "from_torch_state_dict", "frozen_parameters",
    "frozen_snapshot", "head_name", "load_model", "load_weights", "param_groups", "replace_head", "save_weights",
    "summary", "to_torch_state_dict", "trainable_parameters", "unfreeze",
]

FORMAT = "nnscratch-weights"
"""Value of the ``"format"`` key of a weight file's JSON header."""

FORMAT_VERSION = 1
"""Version of the weight-file header layout written (and the newest one read)."""

LAYER_CLASSES = {
    "Conv2d": Conv2d, "Dense": Dense, "Linear": Dense, "MaxPool2d": MaxPool2d, "AvgPool2d": AvgPool2d,
    "Dropout": Dropout, "Flatten": Flatten, "LogSoftmax": LogSoftmax, "Softmax": Softmax, "ReLU": ReLU,
    "Sequential": Sequential,
}
"""The only classes :func:`build_model` (and so :func:`load_model`) instantiates."""

_MAX_DEPTH = 16  # nesting of Sequential inside Sequential accepted by build_model
_DTYPES = ("float32", "float64")


# ---------------------------------------------------------------------------
# architecture description
# ---------------------------------------------------------------------------


def _layer_args(layer):
    """JSON-able constructor arguments of a known layer, or None for an unknown class."""
    if isinstance(layer, Conv2d):
        return {
            "in_channels": layer.in_channels, "out_channels": layer.out_channels,
            "kernel_size": list(layer.kernel_size), "stride": list(layer.stride),
            "padding": list(layer.padding), "bias": layer.bias is not None, "dtype": str(layer.weight.dtype),
        }
    if isinstance(layer, Dense):
        return {"in_features": layer.in_features, "out_features": layer.out_features,
                "bias": layer.bias is not None, "dtype": str(layer.weight.dtype)}
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        return {"kernel_size": list(layer.kernel_size), "stride": list(layer.stride), "padding": list(layer.padding)}
    if isinstance(layer, Dropout):
        return {"p": layer.p}
    if isinstance(layer, Flatten):
        return {"start_dim": int(layer.start_dim)}
    if isinstance(layer, (LogSoftmax, Softmax)):
        return {"dim": int(layer.dim)}
    if isinstance(layer, ReLU):
        return {}
    return None


def _class_name(layer):
    for name, cls in LAYER_CLASSES.items():
        if type(layer) is cls and name != "Linear":
            return name
    return type(layer).__name__


def architecture(model, strict=True):
    """
    Describe a :class:`~nnscratch.Sequential` model as JSON-able data.

    The description is what :func:`save_weights` stores in a weight file's header and what
    :func:`build_model` turns back into a model with freshly initialized parameters of the
    right shapes. Each layer is one dict::

        {"name": "conv1", "class": "Conv2d",
         "args": {"in_channels": 1, "out_channels": 32, "kernel_size": [3, 3], "stride": [1, 1],
                  "padding": [0, 0], "bias": true, "dtype": "float32"}}

    Hyper-parameters recorded: ``Conv2d`` in/out channels, kernel size, stride, padding,
    bias, dtype; ``Dense`` in/out features, bias, dtype; ``MaxPool2d``/``AvgPool2d`` kernel
    size, stride, padding; ``Dropout`` p; ``Flatten`` start_dim; ``LogSoftmax``/``Softmax``
    dim; ``ReLU`` none. A nested ``Sequential`` is ``{"class": "Sequential", "args":
    {"layers": [...]}}``.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
        The network.
    strict : bool
        If True (default), a layer of a class outside :data:`LAYER_CLASSES` raises
        :class:`ValueError`. If False it is recorded with ``"args": None``: the weights can
        still be saved and loaded with :func:`load_weights` into a model built in code, but
        :func:`build_model` refuses to rebuild it.

    Returns
    -------
    arch : list of dict
        One ``{"name", "class", "args"}`` dict per child, in order.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"architecture: expected a Sequential model, got {type(model).__name__}")
    arch = []
    for name, layer in model.named_children():
        if isinstance(layer, Sequential):
            args = {"layers": architecture(layer, strict)}
        else:
            args = _layer_args(layer)
            if args is None and strict:
                raise ValueError(f"architecture: layer {name!r} is a {type(layer).__name__}, which cannot be "
                                 f"described; known classes: {', '.join(sorted(LAYER_CLASSES))}")
        arch.append({"name": name, "class": _class_name(layer), "args": args})
    return arch


_is_int = serialization._is_int  # a JSON integer: a Python int, not a bool (one checker for every header)


def _int_at_least(value, minimum):
    return _is_int(value) and value >= minimum


def _int_or_int_pair(value, minimum):
    """A kernel_size/stride/padding argument of the architecture header, normalized to a list of two."""
    if _int_at_least(value, minimum):
        return [value, value]
    if isinstance(value, list) and len(value) == 2 and all(_int_at_least(v, minimum) for v in value):
        return list(value)
    raise ValueError(f"must be an int >= {minimum} or a list of two, got {value!r}")


# class -> {argument: (required, checker returning the normalized value or raising ValueError)}
def _positive(value):
    if not _int_at_least(value, 1):
        raise ValueError(f"must be a positive int, got {value!r}")
    return value


def _int(value):
    if not _is_int(value):
        raise ValueError(f"must be an int, got {value!r}")
    return value


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _dtype(value):
    if value not in _DTYPES:
        raise ValueError(f"must be one of {_DTYPES}, got {value!r}")
    return value


def _probability(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"must be a number in [0, 1), got {value!r}")
    return float(value)


def _size_pair(value):
    return _int_or_int_pair(value, 1)


def _padding_pair(value):
    return _int_or_int_pair(value, 0)


_POOL_ARGS = {"kernel_size": (True, _size_pair), "stride": (False, _size_pair), "padding": (False, _padding_pair)}
_ARG_SPECS = {
    "Conv2d": {"in_channels": (True, _positive), "out_channels": (True, _positive),
               "kernel_size": (True, _size_pair), "stride": (False, _size_pair),
               "padding": (False, _padding_pair), "bias": (False, _bool), "dtype": (False, _dtype)},
    "Dense": {"in_features": (True, _positive), "out_features": (True, _positive), "bias": (False, _bool),
              "dtype": (False, _dtype)},
    "MaxPool2d": _POOL_ARGS, "AvgPool2d": _POOL_ARGS,
    "Dropout": {"p": (False, _probability)},
    "Flatten": {"start_dim": (False, _int)},
    "LogSoftmax": {"dim": (False, _int)}, "Softmax": {"dim": (False, _int)},
    "ReLU": {},
}
_ARG_SPECS["Linear"] = _ARG_SPECS["Dense"]


def _validate_architecture(arch, where, depth=0, prefix=""):
    """Type-check an architecture (untrusted: it may come from a file); return a normalized copy."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: Sequential nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(arch, list):
        raise ValueError(f"{where}: the architecture must be a list of layers, got {type(arch).__name__}")
    normalized, names = [], set()
    for position, entry in enumerate(arch):
        if not isinstance(entry, dict) or set(entry) != {"name", "class", "args"}:
            raise ValueError(f"{where}: layer {prefix}#{position} must be an object with exactly the keys "
                             f"'name', 'class' and 'args', got {entry!r:.200}")
        name, cls, args = entry["name"], entry["class"], entry["args"]
        if not isinstance(name, str) or not name or "." in name or name in names or len(name) > 200:
            raise ValueError(f"{where}: layer {prefix}#{position} has an invalid or repeated name {name!r:.200}")
        names.add(name)
        full = prefix + name
        if not isinstance(cls, str) or cls not in LAYER_CLASSES:
            raise ValueError(f"{where}: layer {full!r} has class {cls!r:.200}, which cannot be rebuilt; "
                             f"known classes: {', '.join(sorted(LAYER_CLASSES))}. Build the model in code and "
                             f"use load_weights")
        if cls == "Sequential":
            if not isinstance(args, dict) or set(args) != {"layers"}:
                raise ValueError(f"{where}: Sequential {full!r} needs args {{'layers': [...]}}")
            layers = _validate_architecture(args["layers"], where, depth + 1, full + ".")
            normalized.append({"name": name, "class": cls, "args": {"layers": layers}})
            continue
        if not isinstance(args, dict):
            raise ValueError(f"{where}: layer {full!r} ({cls}) has args {args!r:.200}, expected an object")
        spec = _ARG_SPECS[cls]
        unknown = sorted(set(args) - set(spec))
        if unknown:
            raise ValueError(f"{where}: layer {full!r} ({cls}) has unknown arguments {unknown}")
        checked = {}
        for key, (required, check) in spec.items():
            if key not in args:
                if required:
                    raise ValueError(f"{where}: layer {full!r} ({cls}) lacks the argument {key!r}")
                continue
            try:
                checked[key] = check(args[key])
            except ValueError as exc:
                raise ValueError(f"{where}: layer {full!r} ({cls}) argument {key!r} {exc}") from None
        normalized.append({"name": name, "class": cls, "args": checked})
    return normalized


def _parameter_shapes(arch, prefix=""):
    """{parameter name: shape} that a (validated) architecture's model will have."""
    shapes = OrderedDict()
    for entry in arch:
        name, cls, args = prefix + entry["name"], entry["class"], entry["args"]
        if cls == "Sequential":
            shapes.update(_parameter_shapes(args["layers"], name + "."))
        elif cls == "Conv2d":
            k = _int_or_int_pair(args["kernel_size"], 1)
            shapes[f"{name}.weight"] = (args["out_channels"], args["in_channels"], k[0], k[1])
            if args.get("bias", True):
                shapes[f"{name}.bias"] = (args["out_channels"],)
        elif cls in ("Dense", "Linear"):
            shapes[f"{name}.weight"] = (args["out_features"], args["in_features"])
            if args.get("bias", True):
                shapes[f"{name}.bias"] = (args["out_features"],)
    return shapes


def build_model(arch, generator=None):
    """
    Build a :class:`~nnscratch.Sequential` from an :func:`architecture` description.

    Only the classes of :data:`LAYER_CLASSES` are instantiated, with arguments checked for
    names and types first, so a description read from an untrusted file cannot run code;
    any problem raises :class:`ValueError` naming the layer.

    Parameters
    ----------
    arch : list of dict
        As returned by :func:`architecture`.
    generator : numpy Generator, optional
        Draws the initial weights (default: the library generator of :mod:`nnscratch.rng`).

    Returns
    -------
    model : :class:`~nnscratch.Sequential`
        Freshly initialized parameters of the described shapes, in training mode.
    """
    return _build(_validate_architecture(arch, "build_model"), generator)


def _build(arch, generator, where="build_model"):
    """The Sequential an already validated `arch` describes; `where` starts error messages
    (``load_model(<path>)`` for a file, so an argument a layer refuses names the file)."""
    layers = []
    for entry in arch:
        cls, args = entry["class"], dict(entry["args"])
        if cls == "Sequential":
            layer = _build(args["layers"], generator, where)
        else:
            if cls in ("Conv2d", "Dense", "Linear"):
                args["generator"] = generator
                if "dtype" in args:
                    args["dtype"] = np.dtype(args["dtype"])
            try:
                layer = LAYER_CLASSES[cls](**args)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: layer {entry['name']!r} ({cls}): {exc}") from None
        layers.append((entry["name"], layer))
    return Sequential(OrderedDict(layers))


# ---------------------------------------------------------------------------
# loading report
# ---------------------------------------------------------------------------


def _shape_text(shape):
    return "-" if shape is None else str(tuple(int(d) for d in shape))


@dataclass
class LoadReport:
    """
    What a load (:func:`load_weights`, :func:`from_torch_state_dict`) did, name by name.

    Attributes
    ----------
    loaded : list of str
        Parameters whose values were copied from the source.
    missing : list of str
        Model parameters the source lacks (left unchanged).
    unexpected : list of str
        Source arrays the model has no parameter for (ignored).
    mismatched : list of (str, tuple, tuple)
        ``(name, model_shape, source_shape)`` for parameters present on both sides with
        different shapes (left unchanged).
    skipped : list of str
        Names, from either side, excluded by ``skip=`` (left unchanged).
    source : str
        The file, or ``"state_dict"``.
    header : dict
        The file's JSON header (``{}`` for a state dict), e.g. ``header["metadata"]``.

    ``str(report)`` is a printable table; ``report.ok`` is true when nothing is missing,
    unexpected or mismatched.
    """

    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    source: str = ""
    header: dict = field(default_factory=dict, repr=False)
    shapes: dict = field(default_factory=dict, repr=False)  # name -> (model shape or None, source shape or None)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self):
        """Human-readable list of every missing, unexpected and mismatched entry (empty if ``ok``)."""
        lines = []
        if self.mismatched:
            lines.append("shape mismatch: " + "; ".join(
                f"{name}: model {_shape_text(m)} vs {self._side()} {_shape_text(s)}" for name, m, s in self.mismatched))
        if self.missing:
            lines.append(f"missing from the {self._side()}: " + ", ".join(
                f"{name} {_shape_text(self.shapes.get(name, (None, None))[0])}" for name in self.missing))
        if self.unexpected:
            lines.append(f"unexpected in the {self._side()} (no such parameter in the model): " + ", ".join(
                f"{name} {_shape_text(self.shapes.get(name, (None, None))[1])}" for name in self.unexpected))
        return lines

    def _side(self):
        return "state dict" if self.source == "state_dict" else "file"

    def __str__(self):
        status = {}
        for name in self.loaded:
            status[name] = "loaded"
        for name in self.missing:
            status[name] = "missing"
        for name in self.unexpected:
            status[name] = "unexpected"
        for name, _, _ in self.mismatched:
            status[name] = "MISMATCH"
        for name in self.skipped:
            status[name] = "skipped"
        rows = [("name", "status", "model shape", f"{self._side()} shape")]
        for name, state in status.items():
            model_shape, source_shape = self.shapes.get(name, (None, None))
            rows.append((name, state, _shape_text(model_shape), _shape_text(source_shape)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        head = (f"LoadReport from {self.source}: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} mismatched, {len(self.skipped)} skipped")
        lines = [head] + ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


def _matches(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _as_names(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what}: expected a name or a list of names, got {value!r}")
    return names


def _load_arrays(model, arrays, strict, skip, source, header, caller):
    """Compare ``arrays`` with the model's parameters, then (unless strict and not ok) copy them in."""
    skip = _as_names(skip, f"{caller}: skip")
    own = OrderedDict(model.named_parameters())
    for prefix in skip:
        if not any(_matches(n, [prefix]) for n in list(own) + list(arrays)):
            raise ValueError(f"{caller}: skip entry {prefix!r} matches no parameter of the model or the "
                             f"{'state dict' if source == 'state_dict' else 'file'}; model parameters: {list(own)}")
    report = LoadReport(source=source, header=header)
    for name, param in own.items():
        array = arrays.get(name)
        report.shapes[name] = (param.shape, None if array is None else tuple(array.shape))
        if _matches(name, skip):
            report.skipped.append(name)
        elif array is None:
            report.missing.append(name)
        elif tuple(array.shape) != param.shape:
            report.mismatched.append((name, param.shape, tuple(array.shape)))
        else:
            report.loaded.append(name)
    for name, array in arrays.items():
        if name in own:
            continue
        report.shapes[name] = (None, tuple(array.shape))
        (report.skipped if _matches(name, skip) else report.unexpected).append(name)
    if strict and not report.ok:
        raise ValueError(f"{caller}({source}): the {report._side()} does not fit the model (strict=True), nothing "
                         "was loaded:\n  " + "\n  ".join(report.problems())
                         + "\n(strict=False loads what fits and reports the rest; skip=[...] excludes layers)")
    for name in report.loaded:
        param = own[name]
        param.data = np.array(arrays[name], dtype=param.dtype, copy=True, order="C")
    return report


def _check_numeric(name, array, caller):
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{caller}: array {name!r} has dtype {array.dtype}; only numeric (float or integer) arrays "
                         "are accepted (object arrays are refused: they would need pickle)")
    return array


# ---------------------------------------------------------------------------
# weight files
# ---------------------------------------------------------------------------


def _input_shape_list(input_shape, caller):
    if input_shape is None:
        return None
    shape = [int(d) if isinstance(d, np.integer) else d for d in input_shape] \
        if isinstance(input_shape, (tuple, list)) else None
    if not shape or not all(_int_at_least(d, 1) for d in shape):
        raise ValueError(f"{caller}: input_shape must be a tuple of positive ints such as (1, 28, 28), "
                         f"got {input_shape!r}")
    return [int(d) for d in shape]


def save_weights(model, path, metadata=None, input_shape=None):
    """
    Save a model's weights, architecture and input shape to a safetensors file, atomically.

    The arrays are the model's ``state_dict()`` (``conv1.weight``, ``conv1.bias``, ...),
    stored under the names PyTorch would use. The JSON header is::

        {"format": "nnscratch-weights", "format_version": 1, "nnscratch_version": "0.1.0",
         "architecture": architecture(model), "input_shape": [1, 28, 28] or null,
         "metadata": {...}}

    The format cannot carry code (see the module docstring), so the file is safe to share;
    PyTorch users read it with ``safetensors.torch.load_file(path)``. The file is written
    to a temporary file and renamed over `path`: an error or crash never leaves a partial
    file, and the previous file at `path` survives any failure.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
        The network. Layers of classes outside :data:`LAYER_CLASSES` are allowed (their
        weights are saved) but such a file can only be loaded with :func:`load_weights`.
    path : str or path-like
        Destination file (its directory must exist).
    metadata : dict, optional
        Anything JSON-serializable to keep with the weights (task, classes, accuracy...).
    input_shape : tuple of int, optional
        Shape of one input sample without the batch axis, e.g. ``(1, 28, 28)``. When given,
        it is checked against the layers (channels, sizes, features).
    """
    from .. import __version__

    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save_weights: metadata must be a dict or None, got {type(metadata).__name__}")
    shape = _input_shape_list(input_shape, "save_weights")
    if shape is not None:
        _, _, error = _propagate(model, (1,) + tuple(shape))
        if error is not None:
            raise ValueError(f"save_weights: input_shape {tuple(shape)} does not fit the model: {error}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnscratch_version": __version__,
        "architecture": architecture(model, strict=False),
        "input_shape": shape,
        "metadata": {} if metadata is None else metadata,
    }
    serialization.save_file(path, model.state_dict(), header)


def _read_weights(path):
    """(arrays, header) of a weight file; also accepts fit() checkpoints and foreign safetensors files."""
    arrays, header = serialization.load_file(path)
    kind = header.get("format")
    if kind == FORMAT:
        version = header.get("format_version")
        if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"{path}: weight file format version {version!r}; this nnscratch reads versions "
                             f"1 to {FORMAT_VERSION} (written by a newer nnscratch?)")
    elif kind == "nnscratch.checkpoint":  # a fit() checkpoint: the model's arrays are "model.<name>"
        arrays = {name[len("model."):]: a for name, a in arrays.items() if name.startswith("model.")}
    elif header:
        raise ValueError(f"{path}: not an nnscratch weight file (header format {kind!r:.100})")
    return _model_order(arrays, header), header  # load_file returns numeric arrays only


def _model_order(arrays, header):
    """The file's arrays in the order of the saved model's parameters (safetensors sorts them its own
    way), so that reports list them as the model does; names the architecture lacks come last, sorted."""
    try:
        order = list(_parameter_shapes(_validate_architecture(header.get("architecture"), "")))
    except ValueError:
        order = []
    position = {name: i for i, name in enumerate(order)}
    names = sorted(arrays, key=lambda name: (position.get(name, len(order)), name))
    return OrderedDict((name, arrays[name]) for name in names)


def load_weights(model, path, strict=True, skip=()):
    """
    Load a weight file (from :func:`save_weights`) into an existing model.

    Parameters are matched by name (``conv1.weight``...). Values are cast to each
    parameter's dtype and replace its ``.data`` (its ``requires_grad`` is kept; frozen
    parameters are loaded too). The file is validated before anything is read into the
    model: a malformed, truncated or hostile file (header too large or lying about
    offsets, non-numeric dtype, pickle data...) raises :class:`ValueError` and leaves the
    model untouched.

    Also accepted: a checkpoint written by :func:`nnscratch.fit` (its ``model.*`` arrays)
    and a safetensors file without nnscratch header (e.g. ``safetensors.torch.save_file``
    of a PyTorch ``state_dict``).

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
        Receives the weights.
    path : str or path-like
        The file.
    strict : bool
        If True (default), any missing, unexpected or shape-mismatched parameter raises
        :class:`ValueError` listing *all* of them at once (every mismatching layer with
        both shapes) and nothing is loaded. If False, the parameters that fit are loaded
        and the rest is reported -- the usual way to load a pre-trained body into a
        network whose head has a different number of classes.
    skip : str or list of str
        Names or prefixes (``"fc2"`` covers ``fc2.weight`` and ``fc2.bias``) neither
        loaded nor counted as problems; each must match something.

    Returns
    -------
    report : :class:`LoadReport`
    """
    arrays, header = _read_weights(path)
    return _load_arrays(model, arrays, strict, skip, str(path), header, "load_weights")


def load_model(path):
    """
    Rebuild a model from a weight file alone: architecture from the header, then weights.

    The architecture is validated first (known classes, typed arguments) and the parameter
    shapes it implies are compared with the file's arrays *before* any layer is built, so a
    file describing an enormous layer cannot make the loader allocate it. The layers are
    initialized from a private generator (the library's random stream is not advanced) and
    then overwritten by the file's arrays.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_weights`.

    Returns
    -------
    model : :class:`~nnscratch.Sequential`
        In training mode, every parameter trainable, outputs identical to the saved model.

    Raises
    ------
    ValueError
        The file is invalid or hostile, not an nnscratch weight file, its architecture
        cannot be rebuilt, or its arrays do not match the architecture.
    """
    arrays, header = _read_weights(path)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: load_model needs a file written by save_weights (with an architecture); "
                         "build the model in code and use load_weights")
    arch = _validate_architecture(header.get("architecture"), f"load_model({path})")
    expected = _parameter_shapes(arch)
    problems = []
    for name, shape in expected.items():
        if name not in arrays:
            problems.append(f"{name} {_shape_text(shape)} missing from the file")
        elif tuple(arrays[name].shape) != shape:
            problems.append(f"{name}: architecture {_shape_text(shape)} vs file {_shape_text(arrays[name].shape)}")
    problems += [f"{name} in the file is not a parameter of the architecture" for name in arrays if name not in expected]
    if problems:
        raise ValueError(f"load_model({path}): the arrays do not match the architecture: " + "; ".join(problems))
    model = _build(arch, np.random.default_rng(0), f"load_model({path})")
    _load_arrays(model, arrays, True, (), str(path), header, "load_model")
    return model


# ---------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------


def _select(model, layers, caller):
    """Parameters named by ``layers`` (None = all): layer names, dotted module names or parameter names."""
    params = OrderedDict(model.named_parameters())
    if layers is None:
        return list(params.values())
    names = _as_names(layers, caller)
    modules = {name for name, _ in model.named_modules()}
    selected = OrderedDict()
    for name in names:
        if name not in modules and name not in params:
            children = list(model._modules)
            raise KeyError(f"{caller}: the model has no layer or parameter {name!r}; its layers are {children}")
        for pname, param in params.items():
            if _matches(pname, [name]):
                selected[id(param)] = param
    return list(selected.values())


def freeze(model, layers=None):
    """
    Freeze layers: their parameters get ``requires_grad = False``.

    A frozen parameter is never changed by training: its layer skips computing its
    gradient, :class:`~nnscratch.SGD` skips it (no update, momentum or weight decay, also
    if the optimizer was built before the freeze) and backward stops below the lowest
    trainable layer. This is how a pre-trained body is used as a fixed feature extractor.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    layers : str, list of str or None
        Layer names (``"conv1"``), dotted names of nested layers, or single parameters
        (``"fc1.bias"``); ``None`` (default) freezes every parameter.

    Returns
    -------
    model : the same object
    """
    for param in _select(model, layers, "freeze"):
        param.requires_grad = False
    return model


def unfreeze(model, layers=None):
    """Make layers trainable again (``requires_grad = True``); same `layers` as :func:`freeze`.
    Returns `model`."""
    for param in _select(model, layers, "unfreeze"):
        param.requires_grad = True
    return model


def freeze_to(model, name):
    """
    Freeze every layer *before* `name`; unfreeze `name` and every layer after it.

    fastai's ``Learner.freeze_to``: ``freeze_to(model, "fc1")`` trains the dense layers
    only; ``freeze_to(model, "conv2")`` also fine-tunes the second convolution. Moving the
    boundary down step by step is *gradual unfreezing*.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    name : str or int
        A child's name, or its position (negative counts from the end, as fastai's
        ``freeze_to(-1)``: only the last layer trains).

    Returns
    -------
    model : the same object
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"freeze_to: expected a Sequential model, got {type(model).__name__}")
    if isinstance(name, str):
        boundary = model.index(name)
    elif _is_int(name) and -len(model) <= name < len(model):
        boundary = name % len(model)
    else:
        raise KeyError(f"freeze_to: {name!r} is neither a layer name nor a position; layers are {model.names()}")
    for position, layer in enumerate(model):
        layer.requires_grad_(position >= boundary)
    return model


def frozen_parameters(model):
    """Names of the frozen parameters (``requires_grad`` false), in model order."""
    return [name for name, param in model.named_parameters() if not param.requires_grad]


def trainable_parameters(model):
    """Names of the trainable parameters, in model order."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def frozen_snapshot(model):
    """
    Copy the values of every frozen parameter, to check later that nothing changed them.

    Returns
    -------
    snapshot : dict of str to ndarray
        ``{name: copy of .data}`` for each parameter with ``requires_grad`` false.
    """
    return OrderedDict((name, param.data.copy()) for name, param in model.named_parameters()
                       if not param.requires_grad)


def assert_frozen_unchanged(model, snapshot):
    """
    Check that the parameters of a :func:`frozen_snapshot` are *bit-identical* now.

    Compares dtypes, shapes and raw bytes (so ``-0.0`` versus ``0.0`` or a changed NaN
    payload count as changes).

    Raises
    ------
    AssertionError
        Naming every changed (or vanished) parameter with its largest absolute change.
    """
    params = dict(model.named_parameters())
    changed = []
    for name, before in snapshot.items():
        param = params.get(name)
        if param is None:
            changed.append(f"{name} (no longer in the model)")
            continue
        now = param.data
        if now.dtype != before.dtype or now.shape != before.shape:
            changed.append(f"{name} ({before.dtype}{before.shape} became {now.dtype}{now.shape})")
        elif np.ascontiguousarray(now).tobytes() != np.ascontiguousarray(before).tobytes():
            diff = np.abs(now.astype(np.float64) - before.astype(np.float64))
            changed.append(f"{name} (max |change| {np.nanmax(diff) if diff.size else 0:.3g}, "
                           f"{int(np.count_nonzero(now != before))} of {now.size} values)")
    if changed:
        raise AssertionError("frozen parameters changed: " + "; ".join(changed))


# ---------------------------------------------------------------------------
# surgery: head, cut, extend, input channels
# ---------------------------------------------------------------------------


def _parent_and_name(model, dotted):
    parent = model
    *path, name = dotted.split(".")
    for part in path:
        parent = parent._modules[part]
    return parent, name


def _replace_child(parent, name, layer):
    if isinstance(parent, Sequential):
        parent[name] = layer
    else:
        setattr(parent, name, layer)


def head_name(model, caller="head_name"):
    """The dotted name of the model's head: its last ``Dense`` (``Linear``) layer, e.g. ``"fc2"``.
    This is the layer :func:`replace_head` replaces and the default head of :func:`param_groups`
    and :func:`fine_tune`."""
    heads = [name for name, module in model.named_modules() if isinstance(module, Dense)]
    if not heads:
        raise ValueError(f"{caller}: the model has no Dense layer to take as its head")
    return heads[-1]


def replace_head(model, num_classes, reinit=True, generator=None):
    """
    Replace the output layer (the last ``Dense``) by one with `num_classes` outputs.

    The new ``Dense(in_features, num_classes)`` takes the old layer's name and place (a
    ``LogSoftmax`` after it stays), dtype and bias setting, and is trainable. It is a new
    layer with new :class:`~nnscratch.Parameter` objects: build the optimizer *after*
    calling this (:func:`summary` warns about trainable parameters an optimizer lacks).

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
        Modified in place.
    num_classes : int
        Outputs of the new head.
    reinit : bool
        True (default): the new head is freshly initialized (PyTorch's default init, from
        `generator`). False: output rows ``0 .. min(num_classes, old) - 1`` of the weight
        and bias are copied from the old head (so with the same number of classes the
        values are exactly kept, as Keras' transfer example keeps its last layer; with
        fewer classes the first `num_classes` rows are kept); rows beyond the old number of
        classes, if any, are freshly initialized.
    generator : numpy Generator, optional
        For the initialization (default: the library generator).

    Returns
    -------
    model : the same object
    """
    if not _int_at_least(num_classes, 1):
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    parent, name = _parent_and_name(model, head_name(model, "replace_head"))
    old = parent._modules[name]
    new = Dense(old.in_features, num_classes, bias=old.bias is not None, dtype=old.weight.dtype, generator=generator)
    if not reinit:
        rows = min(num_classes, old.out_features)
        new.weight.data[:rows] = old.weight.data[:rows]
        if old.bias is not None:
            new.bias.data[:rows] = old.bias.data[:rows]
    _replace_child(parent, name, new)
    return model


def cut(model, before):
    """
    The layers of `model` that run before the layer `before`, as a new :class:`~nnscratch.Sequential`.

    The layers are *shared*, not copied: training the cut model trains the original.
    ``cut(net, before="fc2")`` of the seed's Net is everything up to the 128 features that
    feed its last layer (fc2 itself is not included); ``cut(net, before="flatten")`` the
    convolutional body.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    before : str or int
        Name (or position, negative counting from the end) of the first layer left out.

    Returns
    -------
    body : :class:`~nnscratch.Sequential`
    """
    return _cut(model, before, "cut")


def _cut(model, before, caller):
    """:func:`cut`, naming `caller` in errors (a wrong `before` lists the layer names)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"{caller}: expected a Sequential model, got {type(model).__name__}")
    names = model.names()
    if isinstance(before, str) and before in names:
        stop = names.index(before)
    elif _is_int(before) and -len(names) <= before <= len(names):
        stop = before if before >= 0 else before + len(names)
    else:
        raise ValueError(f"{caller}: before={before!r} is not a layer of the model; `before` names the first layer "
                         f"NOT run, one of {names} (or a position from {-len(names)} to {len(names)})")
    return Sequential(OrderedDict(list(model.named_children())[:stop]))


def extend(model, layers):
    """
    A new :class:`~nnscratch.Sequential`: the layers of `model` (shared) followed by `layers`.

    Together with :func:`cut` this puts a new head on a pre-trained body::

        net = extend(cut(pretrained, before="fc2"), [("fc2", Dense(128, 5)), ("log_softmax", LogSoftmax())])

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    layers : list of (str, Module) or dict
        New layers and their names (which must not repeat the model's).

    Returns
    -------
    extended : :class:`~nnscratch.Sequential`
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"extend: expected a Sequential model, got {type(model).__name__}")
    pairs = list(layers.items()) if isinstance(layers, dict) else list(layers)
    result = Sequential(OrderedDict(model.named_children()))
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"extend: layers must be (name, module) pairs, got {pair!r}")
        result.append(pair[1], pair[0])
    return result


def adapt_input_channels(model, in_channels):
    """
    Make the first ``Conv2d`` accept `in_channels` input channels, keeping what it learned.

    * ``c -> 1`` (e.g. an RGB-trained network on grayscale images): the new kernel is the
      *sum* of the kernels over the input channels. A gray image replicated into ``c``
      channels gives exactly the output the old layer gave, since
      ``Σ_c w_c * x = (Σ_c w_c) * x``.
    * ``1 -> c`` (e.g. an MNIST-trained network on color images): the kernel is *repeated*
      over the ``c`` channels and divided by ``c``. On a gray image replicated into ``c``
      channels the output is unchanged, since ``Σ_c (w / c) * x = w * x``; on color
      images the layer sees the mean of the channels.

    Other conversions raise :class:`ValueError`. The layer keeps its other
    hyper-parameters and its ``requires_grad``; its weight becomes a new
    :class:`~nnscratch.Parameter` (build the optimizer afterwards).

    Returns
    -------
    model : the same object (unchanged if the channels already match)
    """
    if not _int_at_least(in_channels, 1):
        raise ValueError(f"adapt_input_channels: in_channels must be a positive int, got {in_channels!r}")
    conv = next((m for m in model.modules() if isinstance(m, Conv2d)), None)
    if conv is None:
        raise ValueError("adapt_input_channels: the model has no Conv2d layer")
    old = conv.in_channels
    if in_channels == old:
        return model
    weight = conv.weight.data
    if in_channels == 1:
        new = weight.sum(axis=1, keepdims=True, dtype=np.float64).astype(weight.dtype)
    elif old == 1:
        new = np.repeat(weight.astype(np.float64) / in_channels, in_channels, axis=1).astype(weight.dtype)
    else:
        raise ValueError(f"adapt_input_channels: can convert between 1 and c input channels, not {old} -> {in_channels}")
    requires_grad = conv.weight.requires_grad
    conv.weight = Parameter(np.ascontiguousarray(new), requires_grad=requires_grad)
    conv.in_channels = in_channels
    return model


# ---------------------------------------------------------------------------
# feature extraction and fine-tuning
# ---------------------------------------------------------------------------


def extract_features(model, images, before, batch_size=256, transform=None):
    """
    Use a (pre-trained) network as a fixed feature extractor.

    Runs `images` forward through ``cut(model, before)`` in eval mode (dropout off), in
    batches, and returns the activations. Nothing is trained and no backward runs; each
    module's training/eval mode is restored afterwards. The features can then train
    another model (a new ``Dense`` head, a linear classifier...) at a fraction of the
    cost of running the body at every epoch.

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    images : ndarray, shape (N, C, H, W)
        Prepared float inputs (or raw ones with `transform`).
    before : str or int
        The first layer *not* run (see :func:`cut`): the features are what feeds it; e.g.
        ``before="fc2"`` for the seed's Net gives the 128 features feeding its classifier.
    batch_size : int
        Images per forward pass.
    transform : callable, optional
        Applied to each batch first (e.g. :func:`nnscratch.data.prepare_images`).

    Returns
    -------
    features : ndarray, shape (N, ...)
    """
    return forward_in_batches(_cut(model, before, "extract_features"), images, batch_size, transform,
                              "extract_features")


def param_groups(model, lr, body_lr=None, head=None):
    """
    Parameter groups for :class:`~nnscratch.SGD` with *discriminative learning rates*.

    Pre-trained layers already hold good features and should move slowly; the new head
    starts from random values and needs a larger step. So the head layers train at `lr`
    and every other parameter (the body) at `body_lr`, typically 10 to 100 times smaller.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    lr : float
        Learning rate of the head.
    body_lr : float, optional
        Learning rate of the rest; default `lr`.
    head : str, tuple of str or None
        Names (or prefixes) of the head layers; None (default): the last ``Dense``, the layer
        :func:`replace_head` replaces (:func:`head_name`).

    Returns
    -------
    groups : list of dict
        ``[{"name": "body", "params": [...], "lr": body_lr}, {"name": "head", "params": [...], "lr": lr}]``;
        ``SGD(groups, lr=lr, momentum=0.9)``. All parameters are included, frozen ones too
        (SGD skips them while frozen, so one optimizer serves every phase of a fine-tuning).
    """
    head_ids = {id(p) for p in _select(model, _head_names(model, head, "param_groups"), "param_groups")}
    params = list(model.parameters())
    return [
        {"name": "body", "params": [p for p in params if id(p) not in head_ids], "lr": lr if body_lr is None else body_lr},
        {"name": "head", "params": [p for p in params if id(p) in head_ids], "lr": lr},
    ]


def _head_names(model, head, caller):
    """`head` as a list of layer names (None: :func:`head_name`); a ValueError naming `head=` and the
    model's layers when one is not a layer or parameter of the model."""
    if head is None:
        return [head_name(model, caller)]
    names = _as_names(head, f"{caller}: head")
    known = {name for name, _ in model.named_modules()} | {name for name, _ in model.named_parameters()}
    wrong = [name for name in names if name not in known]
    if wrong or not names:
        layers = [name for name, _ in model.named_modules() if name]
        denses = [name for name, module in model.named_modules() if isinstance(module, Dense)]
        hint = f"; head=None takes the last Dense layer, {denses[-1]!r} (the one replace_head replaces)" if denses else ""
        raise ValueError(f"{caller}: head={head!r} names no layer of the model; its layers are {layers}{hint}")
    return names


def fine_tune(model, criterion, train_loader, *, head_epochs, full_epochs, lr, body_lr, momentum=0.9,
              head=None, val_loader=None, progress=False, weight_decay=0.0):
    """
    Fine-tune a pre-trained network in two phases (fastai's ``fine_tune``).

    1. ``head_epochs`` epochs with the body frozen: only the (new, random) head trains, at
       `lr`, so its first large, noisy gradients cannot wreck the pre-trained features.
    2. ``full_epochs`` epochs with everything unfrozen: the body at `body_lr`, the head at
       `lr` (:func:`param_groups`).

    One :class:`~nnscratch.SGD` serves both phases (it skips the frozen body in phase 1).
    Afterwards every parameter is trainable, unless ``full_epochs == 0``: then the body
    stays frozen (a pure feature-extraction training).

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
        With its head already in place (:func:`replace_head`).
    criterion : loss
    train_loader : iterable of (x, y)
    head_epochs, full_epochs : int
    lr, body_lr : float
        Learning rates of the head and of the body.
    momentum, weight_decay : float
    head : str, tuple of str or None
        The head layers; None (default): the last ``Dense``, as :func:`param_groups`.
    val_loader : iterable of (x, y), optional
    progress : bool

    Returns
    -------
    history : :class:`~nnscratch.History`
        Both phases (:meth:`~nnscratch.History.extend`): the first `head_epochs` epochs, and
        their ``sum(epoch_batches[:head_epochs])`` steps of ``batch_loss``, are phase 1.
    """
    head = _head_names(model, head, "fine_tune")
    optimizer = SGD(param_groups(model, lr, body_lr, head), lr=lr, momentum=momentum, weight_decay=weight_decay)
    freeze(model)
    unfreeze(model, head)
    first = fit(model, criterion, optimizer, train_loader, int(head_epochs), val_loader, progress=progress)
    second = History()
    if full_epochs:
        unfreeze(model)
        second = fit(model, criterion, optimizer, train_loader, int(full_epochs), val_loader, progress=progress)
    return History().extend(first).extend(second)


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def _leaves(model, prefix=""):
    """(dotted name, layer) for the non-Sequential layers, in forward order."""
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, Sequential):
            yield from _leaves(child, full + ".")
        else:
            yield full, child


def _layer_shape_flops(layer, shape):
    """Output shape and forward FLOPs (eval mode) of one layer for an input `shape`, or raise ValueError."""
    numel = math.prod(shape)
    if isinstance(layer, Conv2d):
        if len(shape) != 4 or shape[1] != layer.in_channels:
            raise ValueError(f"expects (N, {layer.in_channels}, H, W), gets {shape}")
        n, _, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"kernel {layer.kernel_size} does not fit an input of shape {shape}")
        out = (n, layer.out_channels, oh, ow)
        flops = 2 * math.prod(out) * layer.in_channels * kh * kw + (math.prod(out) if layer.bias is not None else 0)
        return out, flops
    if isinstance(layer, Dense):
        if len(shape) != 2 or shape[1] != layer.in_features:
            raise ValueError(f"expects (N, {layer.in_features}), gets {shape}")
        out = (shape[0], layer.out_features)
        return out, 2 * shape[0] * layer.in_features * layer.out_features + (math.prod(out) if layer.bias is not None else 0)
    if isinstance(layer, (MaxPool2d, AvgPool2d)):
        if len(shape) != 4:
            raise ValueError(f"expects (N, C, H, W), gets {shape}")
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        oh, ow = (shape[2] + 2 * ph - kh) // sh + 1, (shape[3] + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"window {layer.kernel_size} does not fit an input of shape {shape}")
        out = shape[:2] + (oh, ow)
        return out, math.prod(out) * kh * kw
    if isinstance(layer, Flatten):
        if len(shape) <= layer.start_dim:
            raise ValueError(f"input of shape {shape} has no axis {layer.start_dim}")
        return shape[:layer.start_dim] + (math.prod(shape[layer.start_dim:]),), 0
    if isinstance(layer, ReLU):
        return shape, numel
    if isinstance(layer, (LogSoftmax, Softmax)):
        return shape, 4 * numel
    if isinstance(layer, Dropout):
        return shape, 0  # the identity in eval mode
    # another kind of layer: run it once on zeros, in eval mode, FLOPs unknown (counted 0)
    with layer.eval_mode():
        dtype = next((p.dtype for p in layer.parameters()), np.float32)
        out = layer(np.zeros(shape, dtype=dtype))
    return tuple(out.shape), 0


def _propagate(model, shape):
    """[(name, layer, output shape or None, flops)], total flops, first error (or None)."""
    rows, error, total = [], None, 0
    for name, layer in _leaves(model):
        out, flops = None, 0
        if error is None:
            try:
                out, flops = _layer_shape_flops(layer, tuple(shape))
                shape = out
            except Exception as exc:  # any failure is reported in the summary's row
                error = f"layer {name!r} ({type(layer).__name__}) {exc}"
        rows.append((name, layer, out, flops))
        total += flops
    return rows, total, error


def _optimizer_groups(optimizer):
    """{id(param): group index} and the set of ids, for an SGD-like optimizer."""
    where = {}
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return {id(p): 0 for p in optimizer.parameters()}, [{}]
    for index, group in enumerate(groups):
        for param in group["params"]:
            where[id(param)] = index
    return where, groups


def summary(model, optimizer=None, input_shape=(1, 1, 28, 28)):
    """
    A table of the model's layers for checking a transfer set-up before training.

    One row per layer: name, class, output shape for `input_shape`, number of parameters,
    ``trainable`` / ``frozen`` / ``partly`` (some parameters frozen) / ``-`` (none), whether
    its parameters are in `optimizer` (``yes`` / ``no`` / ``partly`` / ``-``) and at which
    learning rate, and its share of the forward FLOPs (multiply-adds counted as 2 FLOPs; a
    convolution or dense layer's cost is exact, the others are element counts; dropout is
    free in eval mode). Then totals and warnings:

    * trainable parameters NOT in the optimizer -- they receive gradients but are never
      updated (typically after :func:`replace_head` or :func:`adapt_input_channels` with
      an optimizer built before);
    * parameters of the optimizer that are not in the model (stale ones, same cause);
    * frozen parameters the optimizer holds -- harmless, listed for information: SGD skips
      them, and they train as soon as they are unfrozen;
    * every parameter frozen (nothing would train).

    Parameters
    ----------
    model : :class:`~nnscratch.Sequential`
    optimizer : :class:`~nnscratch.SGD`, optional
    input_shape : tuple of int or None
        Batch shape of the input, e.g. ``(1, 1, 28, 28)``; None omits shapes and FLOPs.

    Returns
    -------
    text : str
    """
    if input_shape is not None:
        rows, total_flops, error = _propagate(model, tuple(int(d) for d in input_shape))
    else:
        rows, total_flops, error = [(name, layer, None, 0) for name, layer in _leaves(model)], 0, None
    in_opt, groups = _optimizer_groups(optimizer) if optimizer is not None else ({}, [])
    table = [("layer", "class", "output shape", "params", "trainable", "in optimizer", "lr", "FLOPs")]
    for name, layer, out, flops in rows:
        params = list(layer.parameters())
        count = sum(p.size for p in params)
        flags = {p.requires_grad for p in params}
        trainable = "-" if not params else "trainable" if flags == {True} else "frozen" if flags == {False} else "partly"
        opt, lr = "-", "-"
        if params and optimizer is not None:
            held = [p for p in params if id(p) in in_opt]
            opt = "yes" if len(held) == len(params) else "no" if not held else "partly"
            lrs = sorted({groups[in_opt[id(p)]].get("lr") for p in held} - {None})
            lr = ", ".join(f"{v:g}" for v in lrs) if lrs else "-"
        share = "-" if out is None else f"{100.0 * flops / total_flops:.1f}%" if total_flops else "0.0%"
        table.append((name, type(layer).__name__, _shape_text(out) if out is not None else "?", f"{count:,}",
                      trainable, opt if optimizer is not None else "-", lr, share))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {3, 7}
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))

    named = list(model.named_parameters())
    total = sum(p.size for _, p in named)
    trainable_count = sum(p.size for _, p in named if p.requires_grad)
    lines.append("-" * len(lines[0]))
    lines.append(f"parameters: {total:,} total, {trainable_count:,} trainable, {total - trainable_count:,} frozen")
    if input_shape is not None:
        lines.append(f"forward FLOPs for input {_shape_text(input_shape)}: {total_flops:,}")

    warnings = []
    if error is not None:
        warnings.append(f"WARNING: input_shape {_shape_text(input_shape)} does not fit the model: {error}")
    if named and trainable_count == 0:
        warnings.append("WARNING: every parameter is frozen: training would change nothing")
    if optimizer is not None:
        model_ids = {id(p) for _, p in named}
        not_held = [n for n, p in named if p.requires_grad and id(p) not in in_opt]
        if not_held:
            warnings.append("WARNING: trainable parameters NOT in the optimizer (they get gradients but are never "
                            "updated; build the optimizer after replace_head/adapt_input_channels): "
                            + ", ".join(not_held))
        stale = sum(1 for pid in in_opt if pid not in model_ids)
        if stale:
            warnings.append(f"WARNING: the optimizer holds {stale} parameter(s) that are not in this model "
                            "(stale, e.g. a replaced head)")
        frozen_held = [n for n, p in named if not p.requires_grad and id(p) in in_opt]
        if frozen_held:
            warnings.append("note: frozen parameters held by the optimizer (harmless: SGD skips them while "
                            "frozen; they train once unfrozen): " + ", ".join(frozen_held))
    return "\n".join(lines + warnings)


# ---------------------------------------------------------------------------
# PyTorch interoperability
# ---------------------------------------------------------------------------


def _to_numpy(name, value):
    """A tensor (duck-typed: ``.detach().cpu().numpy()``) or array-like, as an ndarray."""
    try:
        if not isinstance(value, np.ndarray):
            if hasattr(value, "detach"):
                value = value.detach()
            if hasattr(value, "cpu"):
                value = value.cpu()
            if hasattr(value, "numpy"):
                value = value.numpy()
        array = np.asarray(value)
    except Exception as exc:  # e.g. a bfloat16 tensor
        raise ValueError(f"from_torch_state_dict: cannot convert {name!r} ({type(value).__name__}) to a NumPy "
                         f"array: {exc} (convert it with .float() first)") from exc
    return _check_numeric(name, array, "from_torch_state_dict")


def from_torch_state_dict(model, state_dict, strict=True, skip=()):
    """
    Load a PyTorch ``state_dict`` (or any ``{name: array}``) into an nnscratch model.

    nnscratch uses PyTorch's parameter names and layouts, so the seed's ``Net`` trained in
    PyTorch loads into :func:`nnscratch.models.seed_net` unchanged. Values may be torch
    tensors (converted with ``.detach().cpu().numpy()``, duck-typed: torch is never
    imported) or NumPy arrays; they are cast to each parameter's dtype (call
    ``model.double()`` first to keep float64 tensors in float64). Object arrays and other
    non-numeric values are refused.

    Parameters
    ----------
    model : :class:`~nnscratch.Module`
    state_dict : mapping of str to tensor or array
    strict, skip :
        As for :func:`load_weights` (a strict failure lists every problem and loads nothing).

    Returns
    -------
    report : :class:`LoadReport`
    """
    if not hasattr(state_dict, "items"):
        raise TypeError(f"from_torch_state_dict: expected a mapping of names to tensors, got {type(state_dict).__name__}")
    arrays = OrderedDict()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"from_torch_state_dict: keys must be strings, got {name!r}")
        arrays[name] = _to_numpy(name, value)
    return _load_arrays(model, arrays, strict, skip, "state_dict", {}, "from_torch_state_dict")


def to_torch_state_dict(model):
    """
    The model's parameters as a PyTorch-style ``state_dict`` of NumPy arrays.

    ``{name: torch.from_numpy(a) for name, a in to_torch_state_dict(net).items()}`` loads
    into the equivalent PyTorch model with ``load_state_dict``. The arrays are C-contiguous
    copies, in the parameters' dtype.

    Returns
    -------
    state_dict : OrderedDict of str to ndarray
    """
    return OrderedDict((name, np.array(param.data, copy=True, order="C")) for name, param in model.named_parameters())

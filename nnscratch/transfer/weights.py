"""Weight files: a model's weights, architecture and input shape in one safetensors file.

The file is written through :mod:`nnscratch.io.safetensors` (it cannot carry code; writes are
atomic). Its JSON header (format :data:`FORMAT`, version :data:`FORMAT_VERSION`) holds the
architecture that :mod:`nnscratch.io.architecture` describes and rebuilds, so :func:`load_model`
needs the file alone. The arrays load by name through :func:`nnscratch.nn.state.load_arrays`, the
one loader of arrays by name.
"""
from collections import OrderedDict

import numpy as np

from ..checks import is_int
from ..io import architecture as _architecture
from ..io import safetensors
from ..nn.state import is_under, load_arrays, shape_text
from ..training.checkpoint import CHECKPOINT_FORMAT, MODEL_PREFIX
from .summary import propagate

FORMAT = "nnscratch-weights"
"""Value of the ``"format"`` key of a weight file's JSON header."""

FORMAT_VERSION = 1
"""Version of the weight-file header layout written (and the newest one read)."""


def _input_shape_list(input_shape, caller):
    if input_shape is None:
        return None
    shape = list(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or not all(is_int(d) and d >= 1 for d in shape):
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
        The network. Layers that cannot be described (their class is not registered in
        :data:`~nnscratch.nn.registry.LAYER_CLASSES` or does not say its ``constructor_args``)
        are allowed: their weights are saved, but such a file can only be loaded with
        :func:`load_weights` into a model built in code.
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
        _, error = propagate(model, (1,) + tuple(shape))
        if error is not None:
            raise ValueError(f"save_weights: input_shape {tuple(shape)} does not fit the model: {error}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnscratch_version": __version__,
        "architecture": _architecture.architecture(model, strict=False),
        "input_shape": shape,
        "metadata": {} if metadata is None else metadata,
    }
    safetensors.save_file(path, model.state_dict(), header)


def _read_weights(path):
    """(arrays, header) of a weight file; also accepts fit() checkpoints and foreign safetensors files."""
    arrays, header = safetensors.load_file(path)
    kind = header.get("format")
    if kind == FORMAT:
        version = header.get("format_version")
        if not is_int(version) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"{path}: weight file format version {version!r}; this nnscratch reads versions "
                             f"1 to {FORMAT_VERSION} (written by a newer nnscratch?)")
    elif kind == CHECKPOINT_FORMAT:  # a fit() checkpoint: the model's arrays are "model.<name>"
        arrays = {name[len(MODEL_PREFIX):]: a for name, a in arrays.items() if name.startswith(MODEL_PREFIX)}
    elif header:
        raise ValueError(f"{path}: not an nnscratch weight file (header format {kind!r:.100})")
    return _model_order(arrays, header), header  # load_file returns numeric arrays only


def _model_order(arrays, header):
    """The file's arrays in the order of the saved model's parameters (safetensors sorts them its own
    way), so that reports list them as the model does; names the architecture lacks come last, sorted."""
    try:
        order = list(_architecture.parameter_shapes(_architecture.validate_architecture(header.get("architecture"), ""))[0])
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
    report : :class:`~nnscratch.nn.state.LoadReport`
    """
    arrays, header = _read_weights(path)
    return load_arrays(model, arrays, strict=strict, skip=skip, source=str(path), header=header, caller="load_weights")


def load_model(path):
    """
    Rebuild a model from a weight file alone: architecture from the header, then weights.

    The architecture is validated first (registered classes, argument names the constructors
    take) and the parameter shapes its layers say they would hold
    (:meth:`~nnscratch.Module.parameter_shapes`) are compared with the file's arrays *before*
    any layer is built, so a file describing an enormous layer cannot make the loader allocate
    it. Each layer's constructor checks its arguments' values; a refusal names the file and the
    layer. The layers are initialized from a private generator (the library's random stream is
    not advanced) and then overwritten by the file's arrays.

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
    where = f"load_model({path})"
    arch = _architecture.validate_architecture(header.get("architecture"), where)
    expected, unknown = _architecture.parameter_shapes(arch, where)
    problems = []
    for name, shape in expected.items():
        if name not in arrays:
            problems.append(f"{name} {shape_text(shape)} missing from the file")
        elif tuple(arrays[name].shape) != shape:
            problems.append(f"{name}: architecture {shape_text(shape)} vs file {shape_text(arrays[name].shape)}")
    problems += [f"{name} in the file is not a parameter of the architecture" for name in arrays
                 if name not in expected and not is_under(name, unknown)]  # those of `unknown` are checked once built
    if problems:
        raise ValueError(f"{where}: the arrays do not match the architecture: " + "; ".join(problems))
    model = _architecture.build_validated(arch, np.random.default_rng(0), where)
    load_arrays(model, arrays, mismatched="raise", source=str(path), header=header, caller="load_model")
    return model

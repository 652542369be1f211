"""Safe, atomic files of named arrays plus a JSON header (the safetensors format).

One concept: a file holds ``{name: ndarray}`` and one JSON object (the *header*, for
hyper-parameters, epoch counters, histories, random generator states...)::

    save_file("run.safetensors", {"fc1.weight": w, "fc1.bias": b}, {"epoch": 3})
    arrays, header = load_file("run.safetensors")

Why safetensors rather than ``np.save``/``pickle``/``torch.save``:

* **It cannot carry code.** A pickle (and so ``torch.save``, ``np.load(allow_pickle=True)``)
  runs whatever its author put in it when it is loaded; a safetensors file is a JSON header
  (names, dtypes, shapes, byte offsets) followed by the raw little-endian bytes of the
  arrays, nothing else. Loading one from a stranger can at worst fail. This module uses no
  pickle anywhere.
* **Its library checks it and reads it lazily.** Layout: 8 bytes (little-endian ``uint64``)
  giving the header length ``n``, then ``n`` bytes of JSON, then the data. The library's
  ``safe_open`` validates the JSON, every dtype name, shape and offset (the tensors tile the
  data exactly) before it copies out one array at a time; :func:`load_file` adds its own
  limits (see there). A hostile or damaged file is refused with a :class:`ValueError` naming
  it, quickly and without allocating what its header claims.
* **PyTorch users can read it**: ``safetensors.torch.load_file(path)`` returns the same
  arrays as tensors, and ``with safetensors.safe_open(path, framework="pt") as f:
  f.metadata()["nnscratch"]`` the JSON header as a string (it is stored in the format's
  ``__metadata__`` under the key ``"nnscratch"``).

Writes are atomic (:func:`nnscratch.io.atomic.write_atomic`): a crash or an error never leaves a
half-written file and never destroys the previous one.

Only the dtypes a network needs are accepted, in both directions: float32, float64, int64,
int32 and uint8.
"""
import json
import os
import re
from pathlib import Path

import numpy as np

from .atomic import remove_leftovers, write_atomic  # noqa: F401  (remove_leftovers: re-exported)

METADATA_KEY = "nnscratch"
"""Key of the format's ``__metadata__`` under which the JSON header is stored."""

MAX_HEADER_BYTES = 1 << 24
"""Default cap on the safetensors header length: 16 MiB, checked before the safetensors library
reads the file. Its JSON parser takes up to ~9 times the header's length in memory (a header of
empty lists), so the library's own cap of 100 MB would let a hostile header cost a gigabyte;
nnscratch's headers are far smaller (a checkpoint's history holds ~20 bytes per training step).
Raise it per call (``load_file(..., max_header_bytes=...)``) or for the process
(``nnscratch.io.safetensors.MAX_HEADER_BYTES = ...``)."""

MAX_ENTRIES = 1 << 14
"""Default cap on the number of arrays in a file: 16384 (a network has tens to hundreds; each
entry costs a few kB to load). Raise it per call (``load_file(..., max_entries=...)``) or for
the process (``nnscratch.io.safetensors.MAX_ENTRIES = ...``)."""

_CONTAINERS_PER_ENTRY = 4
"""JSON objects/lists the nnscratch header may open per allowed entry (it holds about one per
parameter), plus :data:`_CONTAINERS_SLACK`. Checked by counting ``[`` and ``{`` before Python's
``json`` parses it, because an empty list costs ~70 bytes of memory for its 2 bytes of text."""
_CONTAINERS_SLACK = 4096

# safetensors dtype name <-> NumPy dtype, for the dtypes this library reads and writes.
DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "U8": np.dtype("u1")}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_ALLOWED = "float32, float64, int64, int32, uint8"
_SUPPORTED = f"supported: {', '.join(DTYPES)} ({_ALLOWED})"


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def save_file(path, arrays, header=None):
    """
    Write `arrays` and `header` to `path` as a safetensors file, atomically.

    Parameters
    ----------
    path : str or :class:`os.PathLike`
        Destination; its directory must exist. An existing file is replaced only once
        the new one is completely written (and keeps its permission bits).
    arrays : dict of str to array-like
        Named arrays of dtype float32, float64, int64, int32 or uint8 (any shape,
        including 0-d and empty). Names must be strings other than ``"__metadata__"``.
    header : dict or None
        Any JSON-serializable dict (strict JSON: no NaN or infinity); ``None`` means ``{}``.
        Stored in the file's ``__metadata__`` under :data:`METADATA_KEY`.

    Raises
    ------
    TypeError
        A name is not a string, or `header` is not a dict.
    ValueError
        An unsupported dtype, a reserved name, or a header that is not strict JSON.
    """
    from safetensors.numpy import save as _safetensors_save

    path = Path(path)
    header = {} if header is None else header
    if not isinstance(header, dict):
        raise TypeError(f"save_file({str(path)!r}): header must be a dict, got {type(header).__name__}")
    try:
        header_text = json.dumps(header, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"save_file({str(path)!r}): header is not JSON-serializable ({exc})") from exc

    tensors = {}
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"save_file({str(path)!r}): array names must be strings, got {name!r}")
        if name == "__metadata__":
            raise ValueError(f"save_file({str(path)!r}): '__metadata__' is reserved by the format")
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _NAMES:
            raise ValueError(f"save_file({str(path)!r}): array {name!r} has dtype {array.dtype}; supported dtypes are {_ALLOWED}")
        # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
        tensors[name] = np.asarray(array, dtype=dtype, order="C")

    content = _safetensors_save(tensors, metadata={METADATA_KEY: header_text})
    write_atomic(path, content)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def load_file(path, max_header_bytes=None, max_entries=None):
    """
    Read a safetensors file written by :func:`save_file` (or by any safetensors writer).

    Everything is checked before any array is built: here, the 8-byte header length against
    `max_header_bytes` and the file size; by the safetensors library (``safe_open``), the
    UTF-8 JSON header, every dtype name, shape and byte offset (the tensors must tile the data:
    no gap, no overlap, nothing outside); here again, the number of arrays against
    `max_entries`, every dtype (float32, float64, int64, int32 or uint8 only) and the nnscratch
    JSON header (strict JSON: no ``NaN`` or ``Infinity``; its nesting bounded). The library
    then copies the arrays out one at a time: loading takes about the arrays' memory.

    Parameters
    ----------
    path : str or :class:`os.PathLike`
        The file.
    max_header_bytes : int or None
        Largest header length accepted. Default None: :data:`MAX_HEADER_BYTES` (16 MiB).
    max_entries : int or None
        Largest number of arrays accepted. Default None: :data:`MAX_ENTRIES` (16384).

    Returns
    -------
    arrays : dict of str to :py:class:`ndarray <numpy.ndarray>`
        Writable arrays in native byte order, sorted by name.
    header : dict
        The JSON header given to :func:`save_file`; ``{}`` for a safetensors file written by
        another program (without nnscratch metadata).

    Raises
    ------
    ValueError
        Naming `path` and the problem, for any malformed, truncated or hostile file (the
        library's own refusals included).
    OSError
        The file cannot be opened (e.g. :class:`FileNotFoundError`).
    """
    from safetensors import SafetensorError

    path = Path(path)
    max_header_bytes = MAX_HEADER_BYTES if max_header_bytes is None else max_header_bytes
    max_entries = MAX_ENTRIES if max_entries is None else max_entries

    def fail(message):
        return ValueError(f"{path}: not a valid safetensors file: {message}")

    header_length, data_length = _check_header_length(path, max_header_bytes, fail)
    try:
        with _open_lazily(path) as file:
            names = file.keys()
            if len(names) > max_entries:
                raise fail(f"the header lists {len(names)} arrays, more than the limit of max_entries={max_entries} "
                           "(if the file is genuine, pass load_file(..., max_entries=...) or raise "
                           "nnscratch.io.safetensors.MAX_ENTRIES)")
            for name in names:
                dtype_name = file.get_slice(name).get_dtype()
                if dtype_name not in DTYPES:
                    raise fail(f"tensor {name!r}: unsupported dtype {dtype_name!r}; {_SUPPORTED}")
            header = _parse_metadata(file.metadata(), max_entries, fail)
            arrays = {name: file.get_tensor(name) for name in names}
    except SafetensorError as exc:
        raise fail(_explain(exc, path, header_length, data_length)) from exc
    # (writable, native byte order: a no-op for what safetensors returns on a little-endian machine)
    return {name: np.require(a, a.dtype.newbyteorder("="), ["W"]) for name, a in arrays.items()}, header


def _check_header_length(path, max_header_bytes, fail):
    """The 8-byte header length, checked against the limit and the file size before the library
    reads the file; return (header length, data length)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        prefix = file.read(8)
    if len(prefix) < 8:
        raise fail(f"{len(prefix)} bytes, too short for the 8-byte header length (truncated or empty file)")
    header_length = int.from_bytes(prefix, "little")
    if header_length > max_header_bytes:
        raise fail(f"header length {header_length} bytes exceeds the limit of {max_header_bytes} bytes "
                   "(if the file is genuine, pass load_file(..., max_header_bytes=...) or raise "
                   "nnscratch.io.safetensors.MAX_HEADER_BYTES)")
    if header_length > size - 8:
        raise fail(f"header length {header_length} bytes is larger than the rest of the file ({size - 8} bytes)")
    return header_length, size - 8 - header_length


def _open_lazily(path):
    """``safetensors.safe_open`` for NumPy reading with ``pread`` (safetensors 0.8+): with its default,
    ``mmap``, the whole file counts in resident memory while the arrays are copied out, and a file
    truncated meanwhile by another process kills this one (SIGBUS) instead of raising an error."""
    import safetensors

    return safetensors.safe_open(str(path), framework="numpy", backend="pread")


_POSITION = re.compile(r"line (\d+) column (\d+)")
_UNKNOWN_DTYPE = re.compile(r"unknown variant `([^`]*)`")  # its JSON parser's words; dtype is the header's one enum


def _explain(exc, path, header_length, data_length):
    """The safetensors library's refusal plus what it leaves out: the dtypes nnscratch reads (the
    library lists the twenty-odd it knows), the header text where it found a JSON error, or else
    the rule the tensors' offsets break."""
    message = f"{type(exc).__name__}: {exc}"
    unknown = _UNKNOWN_DTYPE.search(message)
    if unknown:
        message = f"unsupported dtype {unknown[1]!r}; {_SUPPORTED}. {message}"
    position = _POSITION.search(str(exc))
    if position is None:
        return (f"{message} (header {header_length} bytes, data {data_length} bytes: the tensors' data_offsets "
                "[begin, end] must tile the data in order, none outside, each as long as its dtype and shape need)")
    with open(path, "rb") as file:
        file.seek(8)
        text = file.read(header_length)
    start = 0
    for _ in range(int(position[1]) - 1):  # (not split: a header of newlines would make millions of lines)
        start = text.find(b"\n", start) + 1
    column = start + int(position[2])
    near = text[max(start, column - 80):column + 20].split(b"\n")[0]
    return f"{message}, near {near.decode('utf-8', 'replace')!r}"


def _parse_metadata(metadata, max_entries, fail):
    """The nnscratch JSON header stored in ``__metadata__`` (``{}`` if absent)."""
    text = (metadata or {}).get(METADATA_KEY)
    if text is None:
        return {}
    containers = text.count("[") + text.count("{")
    allowed = _CONTAINERS_PER_ENTRY * max_entries + _CONTAINERS_SLACK
    if containers > allowed:
        raise fail(f"the nnscratch header opens {containers} JSON objects or lists, more than the limit of {allowed} "
                   f"that max_entries={max_entries} allows (if the file is genuine, pass load_file(..., max_entries=...))")
    try:  # strict JSON: Python's json would accept NaN, Infinity and -Infinity
        header = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise fail(f"the nnscratch header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise fail(f"the nnscratch header is a JSON {type(header).__name__}, expected an object")
    return header


def _refuse_constant(name):
    raise ValueError(f"{name} is not strict JSON (JSON has no NaN or infinity)")

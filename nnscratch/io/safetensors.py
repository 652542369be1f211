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
* **It is simple to check.** Layout: 8 bytes (little-endian ``uint64``) giving the header
  length ``n``, then ``n`` bytes of JSON, then the data. :func:`load_file` validates the
  header length, the JSON, every dtype, shape and offset *before* any array is built, so a
  hostile or damaged file is refused with a :class:`ValueError` naming it, quickly and
  without allocating what its header claims.
* **PyTorch users can read it**: ``safetensors.torch.load_file(path)`` returns the same
  arrays as tensors, and ``with safetensors.safe_open(path, framework="pt") as f:
  f.metadata()["nnscratch"]`` the JSON header as a string (it is stored in the format's
  ``__metadata__`` under the key ``"nnscratch"``).

Writes are atomic: the file is written to a temporary file in the same directory, flushed
and fsync'ed, then renamed over the destination (``os.replace``), so a crash or an error
never leaves a half-written file and never destroys the previous one. A process killed
mid-save leaves its temporary file ``.<name>.<12 hex digits>.tmp`` behind; the next save to
the same path removes such leftovers of that path (and only those: the name must match
exactly, and a temporary file still locked by a save in progress is left alone).

Only the dtypes a network needs are accepted, in both directions: float32, float64, int64,
int32 and uint8.
"""
import json
import math
import os
import re
import secrets
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an open file cannot be deleted there anyway
    fcntl = None

METADATA_KEY = "nnscratch"
"""Key of the format's ``__metadata__`` under which the JSON header is stored."""

MAX_HEADER_BYTES = 1 << 24
"""Default cap on the safetensors header length: 16 MiB. Parsing JSON can take ~10 times its
length in memory (a list of floats), so the safetensors library's own 100 MB would let a hostile
header cost a gigabyte; nnscratch's headers are far smaller (a checkpoint's history holds ~20
bytes per training step). Raise it per call (``load_file(..., max_header_bytes=...)``) or for
the process (``nnscratch.io.safetensors.MAX_HEADER_BYTES = ...``)."""

MAX_ENTRIES = 1 << 14
"""Default cap on the number of arrays in a file: 16384 (a network has tens to hundreds; each
entry costs a few kB to load). Raise it per call (``load_file(..., max_entries=...)``) or for
the process (``nnscratch.io.safetensors.MAX_ENTRIES = ...``)."""

_CONTAINERS_PER_ENTRY = 4
"""JSON objects/lists a file may hold per allowed entry (an entry is an object with two lists;
the nnscratch header adds about one per parameter), plus :data:`_CONTAINERS_SLACK`. Checked by
counting ``[`` and ``{`` bytes before parsing, because an empty JSON list costs ~70 bytes of
memory for its 2 bytes of text."""
_CONTAINERS_SLACK = 4096

# safetensors dtype name <-> NumPy dtype, for the dtypes this library reads and writes.
DTYPES = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_ALLOWED = "float32, float64, int64, int32, uint8"


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
            raise ValueError(
                f"save_file({str(path)!r}): array {name!r} has dtype {array.dtype}; "
                f"supported dtypes are {_ALLOWED}"
            )
        # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
        tensors[name] = np.asarray(array, dtype=dtype, order="C")

    content = _safetensors_save(tensors, metadata={METADATA_KEY: header_text})
    write_atomic(path, content)


def write_atomic(path, content):
    """
    Write the bytes `content` to `path` atomically (temporary file in the same directory,
    flush, fsync, ``os.replace``). The temporary file is removed if anything fails; the
    previous file at `path`, if any, is then left untouched. Leftover temporary files of
    earlier, interrupted writes to `path` are removed first (:func:`remove_leftovers`).
    """
    path = Path(path)
    remove_leftovers(path)
    try:
        mode = path.stat().st_mode & 0o7777  # keep an existing file's permissions
    except FileNotFoundError:
        mode = None
    while not _write_via_temporary(path, content, mode):  # pragma: no cover - see below
        pass
    _fsync_directory(path.parent)


def _write_via_temporary(path, content, mode):
    """One attempt of :func:`write_atomic`: False if another save's :func:`remove_leftovers`
    deleted our temporary file in the instant between its creation and its lock."""
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            # 0o666 and the kernel applies the umask: the permissions of a plain open().
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit random name collided
            continue
    try:
        with os.fdopen(fd, "wb") as file:
            if fcntl is not None:  # held until the rename: marks the file as in use
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            if mode is not None:
                os.chmod(tmp_path, mode)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
            try:
                os.replace(tmp_path, path)
            except FileNotFoundError:  # pragma: no cover - a race lost to remove_leftovers
                if not tmp_path.exists() and path.parent.is_dir():
                    return False
                raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return True


def remove_leftovers(path):
    """
    Remove the temporary files that interrupted :func:`write_atomic` calls to `path` left in
    its directory: regular files named exactly ``.<name of path>.<12 hex digits>.tmp`` that no
    save in progress holds locked. Nothing else is touched; errors are ignored.

    Returns
    -------
    removed : list of :class:`pathlib.Path`
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[0-9a-f]{12}\.tmp")
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if pattern.fullmatch(e.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and _remove_if_unlocked(entry.path):
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _remove_if_unlocked(name):
    if fcntl is None:  # pragma: no cover - Windows refuses to delete a file a writer has open
        os.unlink(name)
        return True
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        os.unlink(name)
    finally:
        os.close(fd)
    return True


def _fsync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def load_file(path, max_header_bytes=None, max_entries=None):
    """
    Read a safetensors file written by :func:`save_file` (or by any safetensors writer).

    Everything is checked before any array is built: the 8-byte header length against
    `max_header_bytes` and against the file size, the number of entries against
    `max_entries`, the header's strict JSON (no ``NaN`` or ``Infinity``), every entry's dtype
    (float32, float64, int64, int32 or uint8 only), shape and byte offsets, and the
    nnscratch JSON header. Only then are the bytes handed to the safetensors library, whose
    own errors are also reported as :class:`ValueError`.

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
        Writable arrays in native byte order, in file order.
    header : dict
        The JSON header given to :func:`save_file`; ``{}`` for a safetensors file written by
        another program (without nnscratch metadata).

    Raises
    ------
    ValueError
        Naming `path` and the problem, for any malformed, truncated or hostile file.
    OSError
        The file cannot be opened (e.g. :class:`FileNotFoundError`).
    """
    from safetensors.numpy import load as _safetensors_load

    path = Path(path)
    max_header_bytes = MAX_HEADER_BYTES if max_header_bytes is None else max_header_bytes
    max_entries = MAX_ENTRIES if max_entries is None else max_entries

    def fail(message):
        return ValueError(f"{path}: not a valid safetensors file: {message}")

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
        header_bytes = file.read(header_length)
        if len(header_bytes) != header_length:
            raise fail("the file changed while being read")
        entries, metadata = _parse_header(header_bytes, size - 8 - header_length, max_entries, fail)
        header = _parse_metadata(metadata, fail)
        data = file.read(size - 8 - header_length)
        if len(data) != size - 8 - header_length or file.read(1):
            raise fail("the file changed while being read")

    try:
        loaded = _safetensors_load(prefix + header_bytes + data)
    except Exception as exc:  # safetensors raises its own SafetensorError (and others)
        raise fail(f"{type(exc).__name__}: {exc}") from exc

    arrays = {}
    for name, (dtype, shape, _) in sorted(entries.items(), key=lambda item: item[1][2]):
        if name not in loaded:
            raise fail(f"safetensors did not return the tensor {name!r}")
        array = np.array(loaded[name], dtype=dtype.newbyteorder("="), copy=True)
        if array.shape != shape:
            raise fail(f"tensor {name!r} came back with shape {array.shape}, header says {shape}")
        arrays[name] = array
    return arrays, header


_RAISE_ENTRIES = ("(if the file is genuine, pass load_file(..., max_entries=...) or raise "
                  "nnscratch.io.safetensors.MAX_ENTRIES)")


def _parse_header(header_bytes, data_length, max_entries, fail):
    """Check the safetensors header; return ({name: (dtype, shape, (begin, end))}, metadata)."""
    containers = header_bytes.count(b"[") + header_bytes.count(b"{")
    allowed = _CONTAINERS_PER_ENTRY * max_entries + _CONTAINERS_SLACK
    if containers > allowed:
        raise fail(f"the header opens {containers} JSON objects or lists, more than the limit of {allowed} "
                   f"that max_entries={max_entries} allows {_RAISE_ENTRIES}")
    try:
        header = _strict_json(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"the header is not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise fail(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None)
    if len(header) > max_entries:
        raise fail(f"the header lists {len(header)} arrays, more than the limit of max_entries={max_entries} "
                   f"{_RAISE_ENTRIES}")
    entries = {}
    for name, entry in header.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise fail(f"{where}: entry is not a JSON object")
        dtype_name = entry.get("dtype")
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise fail(f"{where}: unsupported dtype {dtype_name!r}; supported: {', '.join(DTYPES)} ({_ALLOWED})")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise fail(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        offsets = entry.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)):
            raise fail(f"{where}: data_offsets must be [begin, end] integers, got {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_length:
            raise fail(f"{where}: data_offsets [{begin}, {end}] lie outside the {data_length} data bytes")
        expected = math.prod(shape) * DTYPES[dtype_name].itemsize
        if end - begin != expected:
            raise fail(f"{where}: data_offsets span {end - begin} bytes but dtype {dtype_name} and shape "
                       f"{shape} need {expected}")
        entries[name] = (DTYPES[dtype_name], tuple(shape), (begin, end))
    return entries, metadata


def _parse_metadata(metadata, fail):
    """The nnscratch JSON header stored in ``__metadata__`` (``{}`` if absent)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail("__metadata__ must be an object of strings")
    text = metadata.get(METADATA_KEY)
    if text is None:
        return {}
    try:
        header = _strict_json(text)
    except (ValueError, RecursionError) as exc:
        raise fail(f"the nnscratch header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise fail(f"the nnscratch header is a JSON {type(header).__name__}, expected an object")
    return header


def _refuse_constant(name):
    raise ValueError(f"{name} is not strict JSON (JSON has no NaN or infinity)")


def _strict_json(text):
    """``json.loads`` without Python's extensions ``NaN``, ``Infinity`` and ``-Infinity``."""
    return json.loads(text, parse_constant=_refuse_constant)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)

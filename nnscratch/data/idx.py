"""Reading IDX files (the format MNIST is distributed in), raw or gzip-compressed.

An IDX file is a 4-byte magic ``00 00 <type code> <ndim>``, then ``ndim`` big-endian
``uint32`` dimension sizes, then ``prod(dims) * itemsize`` bytes of big-endian values.

:func:`read_idx` treats the header as a claim to be checked, not an order to allocate:

* the declared payload size ``prod(dims) * itemsize`` is compared with a limit
  (`max_bytes`, default :data:`MAX_IDX_BYTES`) and, when the caller knows them, with the
  exact dtype and shape expected (``load_mnist`` passes MNIST's), *before* anything is read;
* a raw file must then hold exactly that many bytes (checked against its size);
* a gzip stream is decompressed into an array of the declared size and reading stops one
  byte past it, so a small ``.gz`` "decompression bomb" can never expand further than its
  header said (and the header was checked first).
"""
import gzip
import hashlib
import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"

# IDX type code -> element dtype (IDX stores multi-byte values big-endian).
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MAX_IDX_BYTES = 1 << 28
"""Default largest payload (256 MiB) :func:`read_idx` accepts. MNIST's biggest file holds
47 MB; pass ``max_bytes=`` (or set this attribute) to read bigger IDX files."""

_CHUNK_SIZE = 1 << 20


def read_idx(path, sha256=None, *, max_bytes=None, dtype=None, shape=None):
    """
    Read an IDX file, gzip-compressed or raw, into a NumPy array.

    Parameters
    ----------
    path : str or :class:`os.PathLike`
        The file. Compression is detected from the content (gzip magic
        bytes ``1f 8b``), not from the file name.
    sha256 : str or None
        If given, the expected hex SHA-256 of the *decompressed* file
        (header included). Default is None (no check).
    max_bytes : int or None
        Largest payload accepted, in bytes, checked against the header
        before anything is read. Default None means :data:`MAX_IDX_BYTES`
        (256 MiB).
    dtype, shape : NumPy dtype and tuple of int, or None
        If given, the header must declare exactly this element type
        (native byte order) and these dimensions; checked before the
        payload is read.

    Returns
    -------
    array : :py:class:`ndarray <numpy.ndarray>` of shape `dims`
        A writable array in native byte order, with the dtype given by
        the header's type code (uint8, int8, int16, int32, float32 or
        float64) and the shape given by its dimensions.

    Raises
    ------
    ValueError
        Naming `path` and the problem: bad magic, unknown type code,
        number of dimensions outside 1..4, a declared size above
        `max_bytes` or other than `dtype`/`shape`, payload shorter or
        longer than the dimensions say, corrupt or truncated gzip stream,
        or a checksum mismatch.
    """
    path = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    with open(path, "rb") as file:
        is_gzip = file.read(2) == GZIP_MAGIC
        file.seek(0)
        if is_gzip:
            try:
                with gzip.GzipFile(fileobj=file) as stream:
                    header, file_dtype, dims = _read_header(stream, path, limit, dtype, shape)
                    payload = _read_stream(stream, file_dtype, dims, path)
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc
        else:
            header, file_dtype, dims = _read_header(file, path, limit, dtype, shape)
            payload = _read_raw(file, file_dtype, dims, path)

    if sha256 is not None:
        digest = hashlib.sha256(header)
        digest.update(_bytes(payload))
        actual = digest.hexdigest()
        if actual != sha256:
            raise ValueError(
                f"{path}: SHA-256 of the decompressed file is {actual}, expected {sha256}"
            )
    if file_dtype.byteorder == ">":
        payload = payload.astype(file_dtype.newbyteorder("="))
    return payload


def _read_header(stream, path, limit, expected_dtype, expected_shape):
    """Read and check the IDX header; return (header bytes, dtype, dims)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(magic)} bytes)")
    if magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{path}: not an IDX file (magic starts with {magic[:2].hex()}, expected 0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x} (known: {known})")
    if not 1 <= ndim <= 4:
        raise ValueError(f"{path}: IDX header gives {ndim} dimensions, expected 1 to 4")
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(f"{path}: header truncated inside the {ndim} dimension sizes")
    dims = tuple(int.from_bytes(dims_bytes[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    _check_declared(path, dtype, dims, limit, expected_dtype, expected_shape)
    return magic + dims_bytes, dtype, dims


def _check_declared(path, dtype, dims, limit, expected_dtype, expected_shape):
    """Refuse a header whose dtype/dims differ from the expected ones or describe too much data.

    The size checked ignores zero dimensions: ``(0, 2**32 - 1, 2**32 - 1)`` holds no data but
    is no array NumPy can build, and no real file has it."""
    native = dtype.newbyteorder("=")
    if expected_dtype is not None and native != np.dtype(expected_dtype):
        raise ValueError(f"{path}: IDX header declares {native} values, expected {np.dtype(expected_dtype)}")
    if expected_shape is not None and dims != tuple(expected_shape):
        raise ValueError(f"{path}: IDX header declares dimensions {dims}, expected {tuple(expected_shape)}")
    declared = math.prod(dims) * dtype.itemsize
    extent = math.prod(d for d in dims if d) * dtype.itemsize
    if max(declared, extent) > min(limit, sys.maxsize):
        what = (f"{declared} payload bytes" if declared >= extent else
                f"dimensions {dims} whose non-zero sizes multiply to {extent} bytes")
        raise ValueError(
            f"{path}: IDX header ({dims} of {native}) declares {what}, more than the limit of "
            f"{min(limit, sys.maxsize)} bytes; if the file is genuine, pass read_idx(..., max_bytes=...)"
        )


def _length_error(path, expected, actual_description):
    return ValueError(
        f"{path}: header announces {expected} payload bytes but the data has {actual_description}"
    )


def _read_raw(file, dtype, dims, path):
    """Exactly the declared payload of an uncompressed file, checked against the file size
    before anything is allocated; returned as an array of `dims`."""
    expected = math.prod(dims) * dtype.itemsize
    available = os.fstat(file.fileno()).st_size - file.tell()
    if available < expected:
        raise _length_error(path, expected, f"only {available} bytes")
    if available > expected:
        raise _length_error(path, expected, f"{available - expected} trailing bytes after them")
    array = np.empty(dims, dtype=dtype)
    if expected and file.readinto(_bytes(array)) != expected:
        raise ValueError(f"{path}: file changed while being read")
    return array


def _read_stream(stream, dtype, dims, path):
    """Decompress into an array of the declared size, in chunks, then read one byte more:
    a header that overstates the size fails when the stream ends (only the bytes really
    present were touched), one that understates it fails after one extra byte; the stream
    is never decompressed past the declared size plus one byte."""
    expected = math.prod(dims) * dtype.itemsize
    array = np.empty(dims, dtype=dtype)  # pages are only committed as they are written
    view = _bytes(array)
    filled = 0
    while filled < expected:
        count = stream.readinto(view[filled: filled + _CHUNK_SIZE])
        if not count:
            raise _length_error(path, expected, f"only {filled} bytes")
        filled += count
    if stream.read(1):
        raise _length_error(path, expected, "trailing bytes after them")
    return array


def _bytes(array):
    """A flat writable byte view of a C-contiguous array (empty for an empty array)."""
    return memoryview(array.reshape(-1).view(np.uint8))

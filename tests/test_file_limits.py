"""Limits on what a file can make the readers do (issue 10, items 4, 9, 11c, 11d).

Each test checks the *check*, not the catastrophe: limits are made small (a keyword argument
or a monkeypatched default) so that nothing here allocates more than a few megabytes.
"""
import gzip
import json
import os
import re

import numpy as np
import pytest

from nnscratch import data, idx, serialization


def idx_file(path, dims, payload=b"", type_code=0x08, compress=True):
    """An IDX file with the given header `dims` followed by `payload` (gzip-compressed if asked)."""
    content = b"\0\0" + bytes([type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


# ----------------------------------------------------------------------------- IDX (item 4)

@pytest.mark.parametrize("compress", [True, False])
def test_idx_declared_size_above_the_limit_is_refused_before_reading(tmp_path, compress, monkeypatch):
    """A header declaring more than the limit fails from the header alone, naming the file, the
    declared size and the limit; the payload is never read."""
    path = idx_file(tmp_path / "bomb.idx.gz", (1000, 10, 10), bytes(100_000), compress=compress)
    reads = []
    monkeypatch.setattr(idx, "_read_stream", lambda *args: reads.append(args))
    monkeypatch.setattr(idx, "_read_raw", lambda *args: reads.append(args))
    with pytest.raises(ValueError) as info:
        idx.read_idx(path, max_bytes=99_999)
    message = str(info.value)
    assert str(path) in message and "100000 payload bytes" in message and "limit of 99999 bytes" in message
    assert "max_bytes" in message and reads == []


def test_idx_limit_defaults_to_max_idx_bytes_and_can_be_raised(tmp_path, monkeypatch):
    path = idx_file(tmp_path / "a.idx.gz", (50, 20), bytes(range(200)) * 5)
    monkeypatch.setattr(idx, "MAX_IDX_BYTES", 999)
    with pytest.raises(ValueError, match="1000 payload bytes, more than the limit of 999 bytes"):
        data.read_idx(path)
    array = data.read_idx(path, max_bytes=1000)
    assert array.shape == (50, 20) and array.tobytes() == bytes(range(200)) * 5


def test_idx_decompression_stops_at_the_declared_size(tmp_path, monkeypatch):
    """A gzip stream carrying far more than its header declares is not decompressed much
    beyond the declared size: with 5 MB of incompressible extra data, the reader consumes
    well under 1 MB of the compressed file (one read buffer past the declared payload)."""
    declared = 1000
    extra = np.random.default_rng(0).integers(0, 256, 5_000_000, dtype=np.uint8).tobytes()
    path = idx_file(tmp_path / "long.idx.gz", (declared,), bytes(declared) + extra)
    consumed = []

    def counting_open(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        real_read = handle.read

        def read(size=-1):
            chunk = real_read(size)
            consumed.append(len(chunk))
            return chunk

        handle.read = read
        return handle

    monkeypatch.setattr(idx, "open", counting_open, raising=False)
    with pytest.raises(ValueError, match="trailing bytes") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)
    assert 0 < sum(consumed) < 1_000_000, f"read {sum(consumed)} of {path.stat().st_size} compressed bytes"


@pytest.mark.parametrize("dims", [(0, 2**32 - 1, 2**32 - 1), (0, 2**32 - 1, 2**32 - 1, 2**32 - 1), (2**32 - 1, 0)])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_empty_but_absurd_dims_fail_naming_the_file(tmp_path, dims, compress):
    """(0, 2**32-1, ...) holds 0 bytes but is no array NumPy can build: a clear error naming the
    file and the dims, not NumPy's "array is too big"."""
    path = idx_file(tmp_path / "zero.idx", dims, compress=compress)
    with pytest.raises(ValueError) as info:
        idx.read_idx(path)
    message = str(info.value)
    assert str(path) in message and str(dims) in message and "limit" in message
    assert "array is too big" not in message


def test_idx_empty_dataset_still_reads(tmp_path):
    array = idx.read_idx(idx_file(tmp_path / "empty.idx", (0, 28, 28)))
    assert array.shape == (0, 28, 28) and array.dtype == np.uint8


def test_idx_expected_dtype_and_shape_are_checked_before_reading(tmp_path):
    path = idx_file(tmp_path / "labels.idx", (5,), bytes(20), type_code=0x0C)
    with pytest.raises(ValueError, match=r"declares int32 values, expected uint8"):
        idx.read_idx(path, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"declares dimensions \(5,\), expected \(6,\)"):
        idx.read_idx(path, shape=(6,))
    assert idx.read_idx(path, dtype=np.int32, shape=(5,)).dtype == np.int32


def test_load_mnist_checks_the_known_sizes_before_reading(tmp_path, monkeypatch):
    """A bomb named like an MNIST file, declaring a bigger payload than MNIST's, is refused
    from its header (the limit alone would let 256 MiB through)."""
    for name in data.MNIST_FILES:
        dims = (60001, 28, 28) if name == "train-images-idx3-ubyte" else data.MNIST_SHAPES[name][1]
        idx_file(tmp_path / f"{name}.gz", dims)
    monkeypatch.setattr(idx, "_read_stream", lambda *args: pytest.fail("the payload was read"))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: IDX header declares dimensions "
                                         r"\(60001, 28, 28\), expected \(60000, 28, 28\)"):
        data.load_mnist(root=tmp_path, download=False)

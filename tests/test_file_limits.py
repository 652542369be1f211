"""Limits on what a file can make the readers do (issue 10, items 4, 9, 11c, 11d).

Each test checks the *check*, not the catastrophe: limits are made small (a keyword argument
or a monkeypatched default) so that nothing here allocates more than a few megabytes.
"""
import gzip
import json
import re

import numpy as np
import pytest

from nnscratch import data, serialization
from nnscratch.data import idx
from nnscratch.io import atomic


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


# ----------------------------------------------------------------------------- safetensors header (items 11c, 11d)

def safetensors_file(path, header, data=b""):
    """A safetensors file with the given header text (str or dict) and data bytes."""
    text = header if isinstance(header, str) else json.dumps(header)
    path.write_bytes(len(text.encode()).to_bytes(8, "little") + text.encode() + data)
    return path


ONE_TENSOR = '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_load_file_refuses_nan_and_infinity_in_the_json_header(tmp_path, literal):
    """Python's json accepts these non-standard literals; a safetensors header must be strict JSON.
    The nnscratch header is parsed here (with the literals refused); the outer header by the
    safetensors library, whose parser refuses them itself (its error is quoted where it fails)."""
    metadata = json.dumps({"nnscratch": '{"lr": %s}' % literal})
    for where, text, expected in [
            ("nnscratch header", "{%s, \"__metadata__\": %s}" % (ONE_TENSOR, metadata), "not strict JSON"),
            ("outer header", '{%s, "b": {"dtype": "F32", "shape": [%s], "data_offsets": [0, 0]}}' % (ONE_TENSOR, literal),
             "invalid JSON")]:
        path = safetensors_file(tmp_path / "nan.safetensors", text, bytes(4))
        with pytest.raises(ValueError) as info:
            serialization.load_file(path)
        message = str(info.value)
        assert str(path) in message and literal in message and expected in message, (where, message)


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}, 32, None])
def test_load_file_refuses_a_dtype_that_is_not_a_string(tmp_path, dtype):
    """Found by tests/fuzz_files.py: a list as dtype raised TypeError "unhashable type: 'list'"
    without naming the file. The safetensors library now refuses it; the error quotes the entry."""
    path = safetensors_file(tmp_path / "dtype.safetensors",
                            {"a": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}, bytes(4))
    with pytest.raises(ValueError, match="invalid type") as info:
        serialization.load_file(path)
    assert str(path) in str(info.value) and f'"dtype": {json.dumps(dtype)}' in str(info.value)


def many_empty_tensors(path, count):
    return safetensors_file(path, {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                                   for i in range(count)})


def test_load_file_bounds_the_number_of_entries(tmp_path, monkeypatch):
    """1M empty tensors took 26 s and 2.2 GB to load; the count is now checked first against
    MAX_ENTRIES (monkeypatched small here), which the caller can raise."""
    path = many_empty_tensors(tmp_path / "many.safetensors", 101)
    monkeypatch.setattr(serialization, "MAX_ENTRIES", 100)
    with pytest.raises(ValueError) as info:
        serialization.load_file(path)
    message = str(info.value)
    assert str(path) in message and "101 arrays" in message and "max_entries=100" in message
    assert len(serialization.load_file(path, max_entries=101)[0]) == 101


def test_load_file_counts_json_containers_before_parsing(tmp_path, monkeypatch):
    """An nnscratch header of 2-byte empty lists would cost ~35 times its size once parsed by
    Python's json: the number of '[' and '{' is bounded (4 per allowed entry + slack) before
    json.loads runs. (The outer header is parsed by the safetensors library, within the header
    length limit: ~9 times its size at most.)"""
    monkeypatch.setattr(serialization, "_CONTAINERS_SLACK", 10)
    text = '{"x": [' + ",".join(["[]"] * 100) + "]}"
    path = safetensors_file(tmp_path / "lists.safetensors", {"__metadata__": {"nnscratch": text}})
    monkeypatch.setattr(serialization.json, "loads", lambda *a, **k: pytest.fail("the header was parsed"))
    with pytest.raises(ValueError) as info:
        serialization.load_file(path, max_entries=5)
    message = str(info.value)
    assert str(path) in message and "102 JSON objects or lists" in message and "limit of 30" in message


def test_load_file_header_limit_defaults_to_max_header_bytes(tmp_path, monkeypatch):
    path = safetensors_file(tmp_path / "big.safetensors", "{%s}" % ONE_TENSOR, bytes(4))
    size = len("{%s}" % ONE_TENSOR)
    monkeypatch.setattr(serialization, "MAX_HEADER_BYTES", size - 1)
    with pytest.raises(ValueError, match=f"header length {size} bytes exceeds the limit of {size - 1} bytes"):
        serialization.load_file(path)
    assert serialization.load_file(path, max_header_bytes=size)[0]["a"].shape == (1,)


# ----------------------------------------------------------------------------- leftovers of interrupted saves (item 9)

LEFTOVER = ".w.safetensors.0123456789ab.tmp"
UNRELATED = [".w.safetensors.tmp", ".other.safetensors.0123456789ab.tmp", ".w.safetensors.0123456789AB.tmp",
             ".w.safetensors.0123456789ab.tmp.bak", "x.w.safetensors.0123456789ab.tmp",
             ".w.safetensors.0123456789abc.tmp", ".w.safetensors.x.0123456789ab.tmp", "w.safetensors.0123456789ab.tmp",
             ".v.safetensors.0123456789ab.tmp"]


def test_save_removes_only_the_leftovers_of_the_same_path(tmp_path):
    for name in [LEFTOVER, ".w.safetensors.fedcba987654.tmp"] + UNRELATED:
        (tmp_path / name).write_bytes(b"junk")
    (tmp_path / ".w.safetensors.00000000000a.tmp").mkdir()  # a directory: not ours
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep")
    (tmp_path / ".w.safetensors.00000000000b.tmp").symlink_to(outside)  # a symlink: not ours
    serialization.save_file(tmp_path / "w.safetensors", {"a": np.ones(2, np.float32)})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert LEFTOVER not in left and ".w.safetensors.fedcba987654.tmp" not in left
    assert set(UNRELATED) <= set(left), sorted(set(UNRELATED) - set(left))
    assert ".w.safetensors.00000000000a.tmp" in left and ".w.safetensors.00000000000b.tmp" in left
    assert outside.read_bytes() == b"keep"
    assert serialization.load_file(tmp_path / "w.safetensors")[0]["a"].tolist() == [1.0, 1.0]


def test_a_killed_save_leaves_a_leftover_that_the_next_save_removes(tmp_path):
    """A real interruption: the saving process dies (os._exit) after writing, before the rename."""
    import subprocess
    import sys
    target = tmp_path / "w.safetensors"
    code = ("import os, sys, numpy as np\nfrom nnscratch import serialization\n"
            "os.fsync = lambda fd: os._exit(3)\n"
            "serialization.save_file(sys.argv[1], {'a': np.ones(3, np.float32)})\n")
    result = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and re.fullmatch(r"\.w\.safetensors\.[0-9a-f]{12}\.tmp", leftovers[0]), leftovers
    serialization.save_file(target, {"a": np.zeros(3, np.float32)})
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


@pytest.mark.skipif(atomic.fcntl is None, reason="locks are POSIX flock")
def test_a_temporary_file_of_a_save_in_progress_is_kept(tmp_path):
    """Two processes saving to one path: one must not delete the other's temporary file."""
    busy = tmp_path / LEFTOVER
    with open(busy, "wb") as file:
        atomic.fcntl.flock(file.fileno(), atomic.fcntl.LOCK_EX)
        assert serialization.remove_leftovers(tmp_path / "w.safetensors") == []
        assert busy.exists()
    assert serialization.remove_leftovers(tmp_path / "w.safetensors") == [busy]
    assert not busy.exists()

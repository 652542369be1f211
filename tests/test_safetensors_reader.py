"""nnscratch.io.safetensors.load_file reads through the safetensors library's lazy reader (issue 11, item 6).

What the library checks (JSON, dtype names, shapes, offsets) is refused by the library and reported
as our ValueError naming the file, with the header text where the JSON is wrong or the layout the
offsets must follow; what it does not check (header length cap, number of arrays, our five dtypes,
the nnscratch header) is checked here. Loading costs about the memory of the arrays.
"""
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors

from nnscratch.io import safetensors as st


def write_raw(path, header, data=b"", header_length=None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes((len(text) if header_length is None else header_length).to_bytes(8, "little") + text + data)
    return path


def refusal(path, **limits):
    with pytest.raises(ValueError) as info:
        st.load_file(path, **limits)
    message = str(info.value)
    assert message.startswith(f"{path}: not a valid safetensors file: "), message
    return message


@pytest.mark.parametrize("length", [100, 5 << 30, 2**64 - 1])
def test_the_library_never_sees_a_header_longer_than_the_limit(tmp_path, monkeypatch, length):
    """The 8-byte length is read and capped here first: the library's own cap is 100 MB, whose JSON
    could cost ~1 GB to parse."""
    path = write_raw(tmp_path / "long.safetensors", b"{}", header_length=length)
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("the library opened the file"))
    assert f"header length {length} bytes exceeds the limit of 99 bytes" in refusal(path, max_header_bytes=99)


@pytest.mark.parametrize("header, found", [
    ({"x": {"dtype": "BOGUS", "shape": [2], "data_offsets": [0, 8]}}, "unsupported dtype 'BOGUS'; supported: F32, F64, I64"),
    ({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "-2"),
    ({"weight": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}, '"weight": {"dtype": ["F32"]'),
    (b'{"x": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 8]}}', "[Infinity]"),
    (b'{"x": {"dtype": "F32"', '{"x": {"dtype": "F32"'),
])
def test_json_refused_by_the_library_is_quoted_where_it_fails(tmp_path, header, found):
    message = refusal(write_raw(tmp_path / "json.safetensors", header, bytes(8)))
    assert "SafetensorError" in message and "near" in message and found in message, message


@pytest.mark.parametrize("entries, data", [
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, 8),                      # beyond the data
    ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8),                       # shape needs 12
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 12),                      # 4 bytes left over
    ({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8),                       # a gap
    ({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "y": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 8),                      # an overlap
    ({"x": {"dtype": "U8", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, 8),             # size overflows
])
def test_offsets_refused_by_the_library_come_with_the_layout(tmp_path, entries, data):
    path = write_raw(tmp_path / "offsets.safetensors", entries, bytes(data))
    header_length = len(json.dumps(entries))
    message = refusal(path)
    assert f"(header {header_length} bytes, data {data} bytes: the tensors' data_offsets" in message, message


def test_a_dtype_the_library_knows_but_nnscratch_does_not_is_refused_before_reading(tmp_path, monkeypatch):
    path = write_raw(tmp_path / "bf16.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                                     "b": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}},
                     bytes(8))
    opened = []

    def spy(*args, **kwargs):
        file = real_open(*args, **kwargs)
        opened.append(file)
        return file

    real_open = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", spy)
    message = refusal(path)
    assert "tensor 'b': unsupported dtype 'BF16'; supported: F32, F64, I64, I32, U8" in message
    assert len(opened) == 1


def test_loading_costs_about_the_memory_of_the_arrays(tmp_path):
    """Measured with tracemalloc (which sees NumPy's allocations): the earlier reader read the whole
    file, joined it to its header and copied each array out of that, peaking at 3 times the arrays."""
    path = tmp_path / "big.safetensors"
    arrays = {f"layer{i}.weight": np.full((500, 1000), i, np.float32) for i in range(4)}
    st.save_file(path, arrays, {"epoch": 1})
    size = sum(a.nbytes for a in arrays.values())
    del arrays
    tracemalloc.start()
    try:
        loaded, _ = st.load_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [a[0, 0] for a in loaded.values()] == [0, 1, 2, 3]
    assert peak < 1.25 * size, f"peak {peak / 2**20:.1f} MiB to load {size / 2**20:.1f} MiB of arrays"


def test_arrays_come_back_writable_native_and_sorted_by_name(tmp_path):
    path = tmp_path / "w.safetensors"
    st.save_file(path, {"b": np.arange(3, dtype=">f8"), "a": np.zeros((0, 2), np.uint8), "c": np.int64(7)})
    arrays, header = st.load_file(path)
    assert list(arrays) == ["a", "b", "c"] and header == {}
    for array in arrays.values():
        assert array.flags.writeable and array.dtype.isnative
    assert arrays["b"].tolist() == [0, 1, 2] and arrays["a"].shape == (0, 2) and arrays["c"].shape == ()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmark reads /proc/self/status")
def test_the_load_memory_benchmark_runs():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "load_memory.py"
    result = subprocess.run([sys.executable, str(script), "--mib", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["arrays_mib"] == 1.0 and figures["peak_above_start_mib"] >= 0

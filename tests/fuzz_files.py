"""Fuzzing the file readers: IDX files, weight files and checkpoints.

Readers: ``idx`` (:func:`nnscratch.data.read_idx`), ``weights`` (:func:`nnscratch.transfer.load_weights`),
``model`` (:func:`nnscratch.transfer.load_model`) and ``checkpoint``
(:func:`nnscratch.training.load_checkpoint`). Each starts from valid files written by the library
and tries three kinds of variant in turn: *truncated* (cut anywhere), *mutated* (random bytes
flipped, inserted or deleted; for gzip, in the decompressed content too) and *hostile header*
(the header rewritten with absurd dims, dtypes, sizes, numbers, types, names, nesting, bombs).

Every case runs in a forked child (Linux), so that a crash, a hang or a memory blow-up is
observed rather than suffered. Outcomes:

* ``accepted``: the reader returned (a mutation may leave a valid file);
* ``clear``: ValueError, TypeError or OSError whose message names the file;
* ``unclear``: any other exception, or one whose message does not name the file;
* ``crash``: the child died (signal or exit without a result);
* ``hang``: no result within ``--timeout`` seconds (the child is killed);
* ``memory``: peak resident memory above the child's starting point by more than ``--bound-mb``
  (or a MemoryError; the child's address space is capped at 2 GiB above its start, so a case
  that tries to allocate gigabytes fails instead of swamping the machine).

Also counted, for any outcome: ``model_changed_on_error`` (a failed load modified the model or
optimizer it was given) and ``global_rng_changed`` (loading touched NumPy's global generator).

    python tests/fuzz_files.py --cases 2000        # per reader; prints counts and examples
    python tests/fuzz_files.py --cases 30 --json   # what tests/test_errors.py runs
"""
import argparse
import copy
import gzip
import json
import os
import random
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

OUTCOMES = ["accepted", "clear", "unclear", "crash", "hang", "memory"]
FLAGS = ["model_changed_on_error", "global_rng_changed"]


# ----------------------------------------------------------------------------- valid files

def small_model(nn):
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2, stride=1), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(2 * 2 * 2, 3), nn.LogSoftmax(dim=1))


def optimizer_for(nn, model):
    return nn.SGD(model.parameters(), lr=0.01, momentum=0.9)


def valid_files(workdir):
    """{reader: [valid file bytes, ...]} written by the library itself."""
    import nnscratch as nn
    from nnscratch import data, transfer
    from nnscratch.training import checkpoint
    rng = np.random.default_rng(0)
    idx_files = []
    for code, dtype in data.IDX_DTYPES.items():
        shape = [(7,), (3, 4), (2, 3, 5), (2, 1, 2, 3)][code % 4]
        values = (rng.standard_normal(shape) * 50).astype(dtype)
        content = b"\0\0" + bytes([code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
        idx_files += [content + values.tobytes(), gzip.compress(content + values.tobytes())]

    nn.manual_seed(0)
    model = small_model(nn)
    model[4].manual_seed(1)  # a layer with its own generator: its state goes in the checkpoint
    path = Path(workdir) / "valid.safetensors"
    transfer.save_weights(model, path, metadata={"classes": ["a", "b", "c"]}, input_shape=(1, 8, 8))
    weights = path.read_bytes()
    optimizer = optimizer_for(nn, model)
    x, y = rng.standard_normal((4, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 4)
    loader = data.DataLoader(x, y, batch_size=2, shuffle=True)
    history = nn.fit(model, nn.NLLLoss(), optimizer, loader, epochs=1, progress=False, log_every=None)
    checkpoint.save_checkpoint(path, model, optimizer, epoch=1, history=history, train_loader=loader)
    return {"idx": idx_files, "weights": [weights], "model": [weights], "checkpoint": [path.read_bytes()]}


# ----------------------------------------------------------------------------- variants

HOSTILE_NUMBERS = [0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 + 1, -10**9, 10**30,
                   46341, 65536, 1e308, -1e308, 0.5, float("nan"), float("inf")]
HOSTILE_VALUES = HOSTILE_NUMBERS + [
    "fast", "", None, True, False, [], {}, [[[[]]]], "(16000,16000)f8", "test", "seed", "O", "|O", "<U100000000",
    "MT19937", "PCG64", "SFC64", "Philox", "__ndarray__", "model.", "optimizer.x.y", "x" * 10_000,
    list(range(2000)), {"__ndarray__": [1, 2], "dtype": "(16000,16000)f8"}, {"__ndarray__": 5, "dtype": "O"},
    {"bit_generator": "test", "state": {}}, [[2**40, 2**40]], {"type": "AvgPool2d", "kernel_size": 65536},
]


def mutate_bytes(content, rnd):
    content = bytearray(content)
    for _ in range(rnd.choice([1, 1, 2, 4, 16])):
        kind = rnd.choice(["flip", "flip", "set", "insert", "delete"])
        at = rnd.randrange(len(content) + 1)
        if kind == "insert":
            content[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 4, 100])))
        elif at < len(content):
            if kind == "flip":
                content[at] ^= 1 << rnd.randrange(8)
            elif kind == "set":
                content[at] = rnd.choice([0, 0xFF, 0x7F, 0x80, ord("["), ord('"'), ord("9")])
            else:
                del content[at:at + rnd.choice([1, 8, 1000])]
    return bytes(content)


def truncate(content, rnd):
    return content[:rnd.randrange(len(content))]


def _gunzipped(content):
    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else None


def idx_variant(content, kind, rnd):
    raw = _gunzipped(content)
    wrap = gzip.compress if raw is not None else (lambda b: b)
    raw = content if raw is None else raw
    if kind == "truncated":
        return truncate(content, rnd) if rnd.random() < 0.5 else wrap(truncate(raw, rnd))
    if kind == "mutated":
        return mutate_bytes(content, rnd) if rnd.random() < 0.3 else wrap(mutate_bytes(raw, rnd))
    return hostile_idx(raw, rnd)


ZEROS_64MB_GZ = None


def hostile_idx(raw, rnd):
    """A rewritten IDX header: absurd dims / type / ndim, and gzip bombs (a small .gz holding
    64 MB of zeros) under headers that declare more, less or far more than that."""
    ndim = rnd.choice([1, 2, 3, 4, 4, 0, 5, 255])
    type_code = rnd.choice([0x08, 0x08, 0x0C, 0x0E, 0x0A, 0xFF])
    dims = [rnd.choice([0, 1, 2, 28, 60000, 2**16, 2**28, 2**31, 2**32 - 1]) for _ in range(min(ndim, 8))]
    header = b"\0\0" + bytes([type_code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims)
    shape_kind = rnd.choice(["payload", "short", "bomb", "bomb"])
    if shape_kind == "bomb":
        return gzip.compress(header) + _zeros_gz()  # a two-member gzip stream: header, then 64 MB of zeros
    body = raw[16:] if shape_kind == "payload" else raw[16:24]
    out = header + body
    return gzip.compress(out) if rnd.random() < 0.5 else out


def split_safetensors(content):
    length = int.from_bytes(content[:8], "little")
    return json.loads(content[8:8 + length]), content[8 + length:]


def join_safetensors(header, data):
    text = json.dumps(header).encode()  # allow_nan: NaN/Infinity literals are part of the test
    return len(text).to_bytes(8, "little") + text + data


def nodes(tree, path=()):
    """(path, value) of every node of a JSON tree, the root excluded."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        yield path + (key,), value
        yield from nodes(value, path + (key,))


def replace_at(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    if value is KeyError and isinstance(tree, dict):
        del tree[path[-1]]
    else:
        tree[path[-1]] = None if value is KeyError else value


def hostile_safetensors(content, rnd):
    """The JSON header rewritten: a random node of the safetensors header or of the nnscratch
    header inside it replaced by a hostile value or deleted, an extra key, or a bomb of entries."""
    header, data = split_safetensors(content)
    inner = json.loads(header["__metadata__"]["nnscratch"])
    target = inner if rnd.random() < 0.6 else header
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        choice = rnd.random()
        if choice < 0.08:
            header.update({f"e{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                           for i in range(rnd.choice([100, 20_000]))})
        elif choice < 0.12:
            target[rnd.choice(["__ndarray__", "state", "model.x", "epoch"])] = copy.deepcopy(rnd.choice(HOSTILE_VALUES))
        else:
            path, _ = rnd.choice(list(nodes(target)))
            replace_at(target, path, copy.deepcopy(rnd.choice(HOSTILE_VALUES + [KeyError] * 6)))
    if "__metadata__" in header and isinstance(header["__metadata__"], dict):
        header["__metadata__"]["nnscratch"] = json.dumps(inner)
    return join_safetensors(header, data)


def safetensors_variant(content, kind, rnd):
    if kind == "truncated":
        return truncate(content, rnd)
    if kind == "mutated":
        return mutate_bytes(content, rnd)
    try:
        return hostile_safetensors(content, rnd)
    except (TypeError, KeyError, IndexError, AttributeError):  # the walk broke its own tree
        return mutate_bytes(content, rnd)


# ----------------------------------------------------------------------------- classic hostile files, always tried

def _zeros_gz():
    """A gzip member holding 64 MB of zeros (~64 kB compressed): the payload of the bombs."""
    global ZEROS_64MB_GZ
    if ZEROS_64MB_GZ is None:
        compressor = __import__("zlib").compressobj(9, 8, 31)  # wbits 31: a gzip container
        block = bytes(1 << 20)
        ZEROS_64MB_GZ = b"".join(compressor.compress(block) for _ in range(64)) + compressor.flush()
    return ZEROS_64MB_GZ


def _idx_header(dims, type_code=0x08):
    return b"\0\0" + bytes([type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def classic_idx():
    return {
        "bomb declaring MNIST's 47 MB, carrying 64 MB": gzip.compress(_idx_header((60000, 28, 28))) + _zeros_gz(),
        "bomb declaring 1 TiB": gzip.compress(_idx_header((2**20, 2**20))) + _zeros_gz(),
        "bomb declaring 2**62 float64": gzip.compress(_idx_header((2**31, 2**31), 0x0E)) + _zeros_gz(),
        "declares exactly the 256 MiB limit, carries 8 bytes": gzip.compress(_idx_header((2**28,)) + bytes(8)),
        "dims (0, 2**32-1, 2**32-1)": _idx_header((0, 2**32 - 1, 2**32 - 1)),
        "dims (0, 2**32-1, 2**32-1) gz": gzip.compress(_idx_header((0, 2**32 - 1, 2**32 - 1))),
        "declares 1000 bytes, carries 64 MB more": gzip.compress(_idx_header((1000,)) + bytes(1000)) + _zeros_gz(),
    }


def _edit(content, outer=None, inner=None, text=None):
    """`content` with its safetensors header and/or nnscratch header edited in place by the
    given functions, or its nnscratch header replaced by `text`."""
    header, data = split_safetensors(content)
    nnscratch = json.loads(header["__metadata__"]["nnscratch"])
    if inner:
        inner(nnscratch)
    if outer:
        outer(header)
    header["__metadata__"]["nnscratch"] = json.dumps(nnscratch) if text is None else text
    return join_safetensors(header, data)


def _set(path, value):
    def edit(tree):
        replace_at(tree, path, value)
    return edit


def classic_safetensors(reader, base):
    cases = {
        "NaN in the nnscratch header": _edit(base, inner=_set(("format_version",), float("nan"))),
        "20000 empty tensors": _edit(base, outer=lambda h: h.update(
            {f"e{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(20_000)})),
        "header of 2.5M empty lists (5 MB)": _edit(base, text='{"x": [' + ",".join(["[]"] * 2_500_000) + "]}"),
        "header of 3M floats (12 MB)": _edit(base, text='{"x": [' + ",".join(["0.5"] * 3_000_000) + "]}"),
        "outer header of 4M empty lists (16 MB, the library parses it)": _edit(base, outer=lambda h: h.update(
            x=[[]] * 4_000_000)),
        "header length 2**63": (2**63).to_bytes(8, "little") + base[8:],
        "tensor dtype as a list": _edit(base, outer=lambda h: h[next(k for k in h if k != "__metadata__")]
                                        .update(dtype=["F32"])),
    }
    group, layer = ("optimizer", "param_groups", 0), ("architecture",)
    edits = [  # (label, path in the nnscratch header, value)
        ('bit_generator "test" (NumPy self-test)', ("rng", "default", "bit_generator"), "test"),
        ('module bit_generator "seed"', ("rng", "modules", "4", "bit_generator"), "seed"),
        ('ndarray dtype "(16000,16000)f8"', ("rng", "default", "state", "state"),
         {"__ndarray__": [0], "dtype": "(16000,16000)f8"}),
        ("epoch -10**9", ("epoch",), -10**9),
        ('lr "fast"', group + ("lr",), "fast"),
        ("lr -1", group + ("lr",), -1),
        ("momentum -5", group + ("momentum",), -5),
        ("history of 1M losses", ("history", "batch_loss"), [0.5] * 1_000_000),
    ] if reader == "checkpoint" else [
        ("AvgPool2d(46341, padding=23170)", layer + (3, "args"),
         {"kernel_size": [46341, 46341], "stride": [1, 1], "padding": [23170, 23170]}),
        ("AvgPool2d(65536)", layer + (3, "args", "kernel_size"), [65536, 65536]),
        ("Dense with 2**31 inputs", layer + (6, "args", "in_features"), 2**31),
        ("Conv2d with 10**6 filters", layer + (0, "args", "out_channels"), 10**6),
        ("MaxPool2d kernel 2**63-1", layer + (2, "args", "kernel_size"), [2**63 - 1, 2]),
    ]
    cases.update({label: _edit(base, inner=_set(path, value)) for label, path, value in edits})
    if reader == "checkpoint":
        cases["no rng key"] = _edit(base, inner=lambda h: h.pop("rng"))
    return cases


# ----------------------------------------------------------------------------- running one case

def _status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)  # pragma: no cover


def _read_idx(path, model, optimizer, loader):
    from nnscratch import data
    data.read_idx(path)


def _load_weights(path, model, optimizer, loader):
    from nnscratch import transfer
    transfer.load_weights(model, path)


def _load_model(path, model, optimizer, loader):
    from nnscratch import transfer
    transfer.load_model(path)


def _load_checkpoint(path, model, optimizer, loader):
    from nnscratch import training
    training.load_checkpoint(path, model, optimizer, loader)


READERS = {"idx": _read_idx, "weights": _load_weights, "model": _load_model, "checkpoint": _load_checkpoint}
"""Reader name -> function(path, fresh model, its optimizer, a loader) run in the child."""


def run_reader(reader, path):
    """In the child: load `path` with `reader`; return what it observed (a JSON-able dict)."""
    import nnscratch as nn
    from nnscratch import data
    nn.manual_seed(0)
    model = small_model(nn)
    optimizer = optimizer_for(nn, model)
    loader = data.DataLoader(np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64), batch_size=2)
    before = [p.data.copy() for p in model.parameters()]
    global_state = np.random.get_state()[1].copy()
    start_rss = _status_mb("VmRSS")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (int(_status_mb("VmSize") * 2**20) + 2**31, hard))
    result = {}
    try:
        READERS[reader](path, model, optimizer, loader)
        result["error"] = None
    except BaseException as exc:  # we classify whatever happens
        result["error"] = type(exc).__name__
        result["message"] = str(exc)[:300]
        result["where"] = traceback.extract_tb(exc.__traceback__)[-1].name if exc.__traceback__ else ""
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    result["peak_mb"] = _status_mb("VmHWM") - start_rss
    changed = any(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    result["model_changed_on_error"] = bool(result["error"] and reader != "model" and changed)
    result["global_rng_changed"] = not np.array_equal(global_state, np.random.get_state()[1])
    return result


def run_case(reader, path, timeout):
    """Fork a child that runs `reader` on `path`; return its result dict plus ``outcome``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            payload = json.dumps(run_reader(reader, path)).encode()
        except BaseException as exc:
            payload = json.dumps({"error": "HarnessError", "message": repr(exc)[:300]}).encode()
        os.write(write_end, payload)
        os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            return {"outcome": "hang"}
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"outcome": "crash", "status": status}
    return json.loads(b"".join(chunks))


def classify(result, path, bound_mb):
    if "outcome" in result:
        return result["outcome"]
    if result["error"] == "MemoryError" or result["peak_mb"] > bound_mb:
        return "memory"
    if result["error"] is None:
        return "accepted"
    named = str(path) in result["message"]
    return "clear" if result["error"] in ("ValueError", "TypeError", "OSError") and named else "unclear"


# ----------------------------------------------------------------------------- the campaign

VARIANT_KINDS = ["truncated", "mutated", "hostile"]
KINDS = ["classic"] + VARIANT_KINDS


def campaign(cases, seed=0, bound_mb=256.0, timeout=60.0, readers=("idx", "weights", "model", "checkpoint")):
    """Run `cases` variants per reader; return the report dict (counts, peaks, examples)."""
    report = {"bound_mb": bound_mb, "timeout_s": timeout, "readers": {}}
    with tempfile.TemporaryDirectory(prefix="nnscratch-fuzz-") as workdir:
        bases = valid_files(workdir)
        for reader in readers:
            for i, base in enumerate(bases[reader]):  # the harness is only meaningful if these load
                path = Path(workdir) / f"valid-{reader}-{i}.bin"
                path.write_bytes(base)
                result = run_case(reader, path, timeout)
                if classify(result, path, bound_mb) != "accepted":
                    raise RuntimeError(f"fuzz_files: a valid {reader} file was not accepted: {result}")
            rnd = random.Random(f"{seed}:{reader}")
            counts = {key: 0 for key in ["tried"] + OUTCOMES + FLAGS}
            by_kind = {kind: {key: 0 for key in OUTCOMES} for kind in KINDS}
            examples, peak, classic_results = {}, 0.0, {}
            classics = classic_idx() if reader == "idx" else classic_safetensors(reader, bases[reader][0])
            make = idx_variant if reader == "idx" else safetensors_variant
            schedule = [("classic", label) for label in classics] + [(VARIANT_KINDS[c % 3], c) for c in range(cases)]
            for kind, case in schedule:
                content = classics[case] if kind == "classic" else make(rnd.choice(bases[reader]), kind, rnd)
                path = Path(workdir) / f"case-{reader}.bin"
                path.write_bytes(content)
                result = run_case(reader, path, timeout)
                path.unlink()
                outcome = classify(result, path, bound_mb)
                if kind == "classic":
                    classic_results[case] = (f"{outcome}, peak {result.get('peak_mb', 0):.0f} MB: "
                                             f"{result.get('error')}: {str(result.get('message'))[:150]}")
                counts["tried"] += 1
                counts[outcome] += 1
                by_kind[kind][outcome] += 1
                peak = max(peak, result.get("peak_mb", 0.0))
                for flag in FLAGS:
                    counts[flag] += bool(result.get(flag))
                notable = [outcome] if outcome not in ("accepted", "clear") else []
                notable += [flag for flag in FLAGS if result.get(flag)]
                for key in notable:
                    detail = f"{key}: {result.get('error')} in {result.get('where')}: {result.get('message', '')}"
                    group = examples.setdefault(f"{key}: {result.get('error')} in {result.get('where')}", [])
                    if len(group) < 2:
                        group.append(f"[{kind} case {case}] {detail[:240]}")
            report["readers"][reader] = {"counts": counts, "by_kind": by_kind, "peak_mb": round(peak, 1),
                                         "examples": examples,
                                         "classic": classic_results}
    return report


def print_report(report):
    print(f"memory bound {report['bound_mb']} MB above each child's start; hang = no result in "
          f"{report['timeout_s']} s")
    header = ["reader", "tried"] + OUTCOMES + FLAGS + ["peak_mb"]
    print(" | ".join(header))
    for reader, r in report["readers"].items():
        print(" | ".join([reader] + [str(r["counts"][k]) for k in header[1:-1]] + [str(r["peak_mb"])]))
    for reader, r in report["readers"].items():
        print(f"\n{reader}: classic hostile files")
        for label, line in r["classic"].items():
            print(f"    {label}: {line}")
    for reader, r in report["readers"].items():
        for key, group in r["examples"].items():
            print(f"\n{reader} {key}")
            for line in group:
                print("   ", line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="cases per reader (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bound-mb", type=float, default=256.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--readers", default="idx,weights,model,checkpoint")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    os.environ.setdefault("NNSCRATCH_PROGRESS", "0")
    report = campaign(args.cases, args.seed, args.bound_mb, args.timeout, tuple(args.readers.split(",")))
    print(json.dumps(report) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_report(report)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()

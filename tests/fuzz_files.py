"""Fuzzing the file readers: IDX files, weight files and checkpoints.

Readers: ``idx`` (:func:`nnscratch.data.read_idx`), ``weights`` (:func:`nnscratch.transfer.load_weights`),
``model`` (:func:`nnscratch.transfer.load_model`) and ``checkpoint``
(:func:`nnscratch.training.load_checkpoint`). Each starts from valid files written by the library
and tries three kinds of variant in turn: *truncated* (cut anywhere), *mutated* (random bytes
flipped, inserted or deleted; for gzip, in the decompressed content too) and *hostile header*
(the header rewritten with absurd dims, dtypes, sizes, numbers, types, names, nesting, bombs),
after a fixed set of classic hostile files; those files and variants are made by
``tests/fuzz_file_variants.py``, this script runs them.

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
    import fuzz_file_variants as v  # a sibling module: main() puts this folder on sys.path (tests import only the harness)
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
            classics = v.classic_idx() if reader == "idx" else v.classic_safetensors(reader, bases[reader][0])
            make = v.idx_variant if reader == "idx" else v.safetensors_variant
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
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
    main()

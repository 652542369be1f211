"""Peak memory of loading a weight file: ``nnscratch.io.safetensors.load_file`` on a file of float32
arrays (200 MiB by default), in a fresh process. The figure is the peak resident set size during the
load minus the resident set size just before it (Linux only: VmHWM, reset through /proc/self/clear_refs),
next to the size of the arrays it returns: the floor for a reader that returns new, writable arrays.

    python benchmarks/load_memory.py             # prints one JSON line
    python benchmarks/load_memory.py --mib 50 --reader old_safetensors.py   # another version's module
    (e.g. git show 04d4c26:nnscratch/io/safetensors.py > old_safetensors.py: the reader before issue 11 item 6)
"""
import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _mib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def load_in_this_process(path, reader):
    if reader:
        spec = importlib.util.spec_from_file_location("reader", reader)
        safetensors = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(safetensors)
    else:
        from nnscratch.io import safetensors
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set size
    before = _mib("VmRSS")
    arrays, _ = safetensors.load_file(path)
    peak = _mib("VmHWM")
    size = sum(a.nbytes for a in arrays.values())
    return {"reader": reader or "nnscratch.io.safetensors", "arrays_mib": round(size / 2**20, 1),
            "peak_above_start_mib": round(peak - before, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="size of the arrays (default 200)")
    parser.add_argument("--reader", help="a .py file whose load_file to measure instead of nnscratch's")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # the child: load this file and print its figures
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_in_this_process(args.load, args.reader)))
        return
    from nnscratch.io import safetensors

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="nnscratch-load-memory-") as workdir:
        path = Path(workdir) / "weights.safetensors"
        safetensors.save_file(path, {f"layer{i}.weight": rng.standard_normal(args.mib << 15, np.float32) for i in range(8)})
        command = [sys.executable, __file__, "--load", str(path)] + (["--reader", args.reader] if args.reader else [])
        child = subprocess.run(command, capture_output=True, text=True, check=True)
    print(child.stdout.strip())


if __name__ == "__main__":
    main()

"""The 7×7 stem's forward (docs/performance.md): why PyTorch's time is bimodal, and the floor of im2col + GEMM.

Times the stem (3→64, 224×224, 7×7, stride 2, padding 3, batch 16, float32) forward of nnscratch
and PyTorch in one process, in three states of glibc's malloc, one after the other:

1. as the process starts;
2. after ``nnscratch.malloc.keep_freed_memory()`` (what the bench and the examples do);
3. after that, with the heap grown (``harness.grow_heap``), as a long training process's heap grows.

glibc serves a request of 32 MiB or more from its heap only when the heap has that much free,
otherwise from a fresh ``mmap`` whose pages fault (and are zeroed by the kernel) when first
written. Each line gives the median time of ``--calls`` calls and the page faults of one call.

Then, heap grown, the stem's im2col product alone (64 × 147 by 147 × 200,704) as one float32 matmul
of NumPy's OpenBLAS at the same thread count: no im2col + GEMM convolution can be faster than it.

    python benchmarks/stem.py            # about 10 s
"""
import argparse
import sys
import time

import numpy as np

import harness
import nnscratch
from nnscratch import malloc

GEMM = (64, 147, 16 * 112 * 112)  # filters × (C·KH·KW) @ (C·KH·KW) × (N·OH·OW)
STATES = ("glibc as the process starts", "keep_freed_memory()", "keep_freed_memory() and a grown heap")


def stem_runners(torch):
    """``{name: forward callable}`` for nnscratch's Conv2d and, when installed, PyTorch's F.conv2d (same weights)."""
    x = np.random.default_rng(0).standard_normal((16, 3, 224, 224), dtype=np.float32)
    nnscratch.manual_seed(0)
    conv = nnscratch.Conv2d(3, 64, 7, stride=2, padding=3)
    runners = {"nnscratch": lambda: conv(x)}
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(conv.weight.data.copy()).requires_grad_(True)
        tb = torch.from_numpy(conv.bias.data.copy()).requires_grad_(True)
        runners["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb, 2, 3)
    return runners


def time_calls(fn, calls):
    """(median ms, page faults of the last call) over ``calls`` calls, the first one not counted."""
    times, faults = [], 0
    for _ in range(calls + 1):
        start_faults, start = harness.minor_faults(), time.perf_counter()
        fn()  # the result is dropped at once, as a training step drops its activations after the backward
        times.append(time.perf_counter() - start)
        faults = harness.minor_faults() - start_faults
        time.sleep(harness.GAP_SECONDS)
    return float(np.median(times[1:])) * 1e3, faults


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="timed calls per library and state (default 10)")
    parser.add_argument("--threads", type=int, default=nnscratch.get_num_threads())
    args = parser.parse_args(argv)
    torch = harness.import_torch()
    nnscratch.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    runners = stem_runners(torch)
    print(f"7×7 stem forward, batch 16, {args.threads} threads: median ms of {args.calls} calls, page faults per call")
    for state in STATES:
        if state == STATES[1]:
            malloc.keep_freed_memory()
        elif state == STATES[2]:
            harness.grow_heap(1024)
        figures = {name: time_calls(fn, args.calls) for name, fn in runners.items()}
        print(f"  {state:<40}" + "".join(f"  {name} {ms:6.1f} ms {faults:6d} faults" for name, (ms, faults) in figures.items()))
    m, k, n = GEMM
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    with harness.BlasThreads(args.threads).limit():
        ms, _ = time_calls(lambda: np.matmul(a, b, out=c), args.calls)
    print(f"the im2col product alone, {m}×{k} @ {k}×{n} (numpy's BLAS, {args.threads} threads): {ms:.1f} ms = "
          f"{2 * m * k * n / ms / 1e6:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

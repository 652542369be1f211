"""The 7×7 stem's forward (docs/performance.md): why PyTorch's time is bimodal, and the floor of im2col + GEMM.

Times the stem (3→64, 224×224, 7×7, stride 2, padding 3, batch 16, float32) forward of nnscratch
and PyTorch in one process, in three states of glibc's malloc, one after the other:

1. as the process starts;
2. after ``nnscratch.malloc.keep_freed_memory()`` (what the bench and the examples do);
3. after that, with the heap grown (``harness.grow_heap``), as a long training process's heap grows.

glibc serves a request of 32 MiB or more from its heap only when the heap has that much free,
otherwise from a fresh ``mmap`` whose pages fault (and are zeroed by the kernel) when first
written. Each line gives the median time of ``--calls`` calls (``harness.measure``: the libraries
interleaved, one call per sample) and the median page faults of a call.

Then, heap grown, the stem's im2col product alone (64 × 147 by 147 × 200,704) as one float32 matmul
of NumPy's OpenBLAS at the same thread count: no im2col + GEMM convolution can be faster than it.

    python benchmarks/stem.py            # about 10 s
"""
import argparse
import sys

import numpy as np

import harness
import nnscratch
from nnscratch import malloc

GEMM = (64, 147, 16 * 112 * 112)  # filters × (C·KH·KW) @ (C·KH·KW) × (N·OH·OW)
STATES = ("glibc as the process starts", "keep_freed_memory()", "keep_freed_memory() and a grown heap")


def stem_calls(torch):
    """``{name: forward callable}`` for nnscratch's Conv2d and, when installed, PyTorch's F.conv2d (same weights).
    Each call's result is dropped at once, as a training step drops its activations after the backward."""
    x = np.random.default_rng(0).standard_normal((16, 3, 224, 224), dtype=np.float32)
    nnscratch.manual_seed(0)
    conv = nnscratch.Conv2d(3, 64, 7, stride=2, padding=3)
    calls = {"nnscratch": lambda: conv(x)}
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(conv.weight.data.copy()).requires_grad_(True)
        tb = torch.from_numpy(conv.bias.data.copy()).requires_grad_(True)
        calls["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb, 2, 3)
    return calls


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="timed calls per library and state (default 10)")
    parser.add_argument("--threads", type=int, default=nnscratch.get_num_threads())
    args = parser.parse_args(argv)
    torch = harness.import_torch()
    nnscratch.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    calls = stem_calls(torch)
    print(f"7×7 stem forward, batch 16, {args.threads} threads: median ms of {args.calls} calls, page faults per call")
    for state in STATES:
        if state == STATES[1]:
            malloc.keep_freed_memory()
        elif state == STATES[2]:
            harness.grow_heap(1024)
        runners = {name: harness.Runner(fn, args.calls) for name, fn in calls.items()}
        harness.measure(runners, warmup=1, adaptive=False)  # one call per sample, interleaved
        figures = harness.summarize(runners, list(runners))
        print(f"  {state:<40}" + "".join(f"  {name} {figures['ms'][name]:6.1f} ms {figures['faults_per_call'][name]:6.0f} faults"
                                         for name in runners))
    ceiling = harness.sgemm_runner(GEMM, args.calls, harness.BlasThreads(args.threads))
    harness.measure({"sgemm": ceiling}, warmup=1, adaptive=False)
    gemm = harness.sgemm_figures(ceiling, GEMM, args.threads)
    m, k, n = GEMM
    print(f"the im2col product alone, {m}×{k} @ {k}×{n} (numpy's BLAS, {args.threads} threads): {gemm['ms']:.1f} ms = "
          f"{gemm['gflops']:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

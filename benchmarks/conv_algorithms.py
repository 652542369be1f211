"""Convolution algorithms side by side: direct (im2col + GEMM), Winograd F(4×4, 3×3) and F(2×2, 3×3),
and PyTorch (optional), on the shapes of the performance issue; and their float32 errors.

Run from the repository root::

    python benchmarks/bench_winograd.py                 # speed table, 2 threads (a few minutes)
    python benchmarks/bench_winograd.py --seed-conv2    # the seed's conv2 only: both backends, float32 errors
    python benchmarks/bench_winograd.py --threads 1 --rounds 5

Timing: every implementation of a row is warmed up, then they are interleaved round-robin in this one
process (one sample of each per round), a sample repeating the call for about 20 ms; the figure is the
median. ``fwd+bwd`` is the forward plus the backward a training step needs (the input gradient only
when the layer is not a network's first). GFLOP/s counts the direct method's 2·N·F·C·KH·KW·OH·OW per
forward (twice that, or three times with the input gradient, for fwd+bwd), whichever algorithm ran.
First, the seed's conv2 with both backends and the float32 errors, max|y₃₂ - y₆₄| / max|y₆₄| against
the float64 direct reference, for y and both gradients.
Nothing here asserts a speed: the machine is shared and noisy.
"""
import argparse
import statistics
import time

import numpy as np

import nnscratch
from nnscratch import ops, reference

# name: (N, C, F, H=W, kernel, stride, padding, first layer: no input gradient)
SHAPES = {
    "64→64 56×56 3×3 p1, N=16": (16, 64, 64, 56, 3, 1, 1, False),
    "128→128 28×28 3×3 p1, N=8": (8, 128, 128, 28, 3, 1, 1, False),
    "seed conv2 32→64 26×26, N=1": (1, 32, 64, 26, 3, 1, 0, False),
    "seed conv2 32→64 26×26, N=64": (64, 32, 64, 26, 3, 1, 0, False),
    "seed conv2 32→64 26×26, N=256": (256, 32, 64, 26, 3, 1, 0, False),
    "seed conv1 1→32 28×28, N=1": (1, 1, 32, 28, 3, 1, 0, True),
    "seed conv1 1→32 28×28, N=64": (64, 1, 32, 28, 3, 1, 0, True),
    "seed conv1 1→32 28×28, N=256": (256, 1, 32, 28, 3, 1, 0, True),
    "16→16 28×28 3×3 p1, N=64": (64, 16, 16, 28, 3, 1, 1, False),
    "8→16 28×28 3×3 p1, N=64": (64, 8, 16, 28, 3, 1, 1, False),
    "3→64 224×224 7×7 s2 p3, N=1": (1, 3, 64, 224, 7, 2, 3, True),
    "256→256 14×14 1×1, N=8": (8, 256, 256, 14, 1, 1, 0, False),
}
ALGORITHMS = ("direct", "winograd", "winograd_2x2")
SAMPLE_SECONDS = 0.02


def sample(fn):
    """Seconds per call of ``fn``, repeated for about ``SAMPLE_SECONDS``."""
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= SAMPLE_SECONDS:
            return elapsed / calls


def interleaved(fns, rounds):
    """Median seconds per call of each of ``fns`` ({name: fn}), sampled round-robin."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(sample(fn))
    return {name: statistics.median(s) for name, s in samples.items()}


def calls(shape, algorithm, torch):
    """``(forward, forward + backward)`` closures of one implementation on float32 data."""
    n, c, f, h, k, s, p, first = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    if algorithm == "torch":
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tx.requires_grad_(not first)

        def train():
            y = torch.nn.functional.conv2d(tx, tw, tb, s, p)
            torch.autograd.grad(y, [tw, tb] if first else [tx, tw, tb], torch.ones_like(y))

        def forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(tx, tw, tb, s, p)
        return forward, train
    grad_y = np.ones_like(ops.conv2d(x, w, b, s, p, algorithm="direct"))

    def train():
        ops.conv2d(x, w, b, s, p, algorithm=algorithm)
        ops.conv2d_backward(x, w, grad_y, s, p, need_input_grad=not first, algorithm=algorithm)
        ops.conv2d_bias_backward(grad_y)
    return (lambda: ops.conv2d(x, w, b, s, p, algorithm=algorithm)), train


def speed_table(args, torch):
    print(f"threads: {args.threads}, rounds: {args.rounds}; ms (× PyTorch) GFLOP/s")
    for name, shape in SHAPES.items():
        n, c, f, h, k, s, p, first = shape
        out = (h + 2 * p - k) // s + 1
        gflop = 2 * n * f * c * k * k * out * out / 1e9
        impls = [a for a in ALGORITHMS if a == "direct" or (k == 3 and s == 1)] + (["torch"] if torch else [])
        for which, factor in (("fwd", 1), ("fwd+bwd", 2 if first else 3)):
            fns = {a: calls(shape, a, torch)[which != "fwd"] for a in impls}
            times = interleaved(fns, args.rounds)
            cells = []
            for a in impls:
                ratio = f" ({times[a] / times['torch']:.2f}×)" if torch and a != "torch" else ""
                cells.append(f"{a} {times[a] * 1e3:.2f} ms{ratio} {gflop * factor / times[a]:.0f}")
            auto = nnscratch.backends.conv_algorithm.choose("auto", (n, c, h, h), (f, c, k, k), (s, s), (p, p))
            print(f"{name:32s} {which:8s} auto={auto:13s} " + " | ".join(cells), flush=True)


def seed_conv2_table(args):
    """Each algorithm on the seed's conv2 (N=64) with each backend: forward time (median, interleaved),
    and the float32 errors of y and both gradients against the float64 direct reference."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 32, 26, 26))
    w = rng.uniform(-1, 1, (64, 32, 3, 3)) / np.sqrt(32 * 9)  # the layer's default (Kaiming uniform) scale
    g = rng.standard_normal((64, 64, 24, 24))
    y64 = reference.conv2d_forward(x, w, None, (1, 1), (0, 0))
    gx64, gw64 = reference.conv2d_backward(x, w, g, (1, 1), (0, 0))
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    print(f"seed conv2, N=64, float32, {args.threads} thread(s): forward ms (GFLOP/s); error max|err| / max|float64 direct|")
    gflop = 2 * 64 * 64 * 32 * 9 * 24 * 24 / 1e9
    for backend in ("numpy", "cython"):
        with nnscratch.use_backend(backend):
            fns = {a: (lambda a=a: ops.conv2d(x32, w32, None, 1, 0, algorithm=a)) for a in ALGORITHMS}
            times = interleaved(fns, 3 if backend == "numpy" else args.rounds)
            for algorithm in ALGORITHMS:
                y = ops.conv2d(x32, w32, None, 1, 0, algorithm=algorithm)
                gx, gw = ops.conv2d_backward(x32, w32, g32, 1, 0, algorithm=algorithm)
                errors = [np.abs(a - e).max() / np.abs(e).max() for a, e in ((y, y64), (gx, gx64), (gw, gw64))]
                print(f"  {backend:6s} {algorithm:13s} {times[algorithm] * 1e3:7.2f} ms ({gflop / times[algorithm]:4.0f})"
                      f"   y {errors[0]:.1e}   ∂L/∂x {errors[1]:.1e}   ∂L/∂w {errors[2]:.1e}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed-conv2", action="store_true", help="only the seed's conv2: every backend, with errors")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    nnscratch.set_num_threads(args.threads)
    seed_conv2_table(args)
    if args.seed_conv2:
        return
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    speed_table(args, torch)


if __name__ == "__main__":
    main()

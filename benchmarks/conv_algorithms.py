"""The seed's conv2 computed each way: im2col + GEMM ("direct"), Winograd F(4×4, 3×3) ("winograd") and
F(2×2, 3×3) ("winograd_2x2"), on the cython and numpy backends, and PyTorch when installed; speed and
float32 error side by side.

Run from the repository root::

    python benchmarks/conv_algorithms.py                      # all available cores, 11 samples each
    python benchmarks/conv_algorithms.py --threads 1 --json out.json
    python benchmarks/conv_algorithms.py --quick              # smoke run, batch 8 (what tests/test_bench.py does)

The layer: ``nnscratch.Conv2d(32, 64, 3, algorithm=...)`` (default-initialized weights, the same for
every implementation) on a float32 (64, 32, 26, 26) standard-normal batch, upstream gradient standard
normal. PyTorch: ``F.conv2d`` with the same weights, autograd on, its gradients by ``torch.autograd.grad``.

* forward: the layer's forward (bias included); forward+backward: forward, then the input gradient
  and the weight and bias gradients, as a training step of a layer that is not the network's first.
* timing (``benchmarks/harness.py``): implementations interleaved round-robin in this process after a
  warm-up, medians; the slow numpy backend gets fewer samples, spread evenly, under its BLAS at
  ``--threads`` threads. GFLOP/s counts the direct method's 2·N·F·C·KH·KW·OH·OW per forward (3× that
  forward+backward) whichever algorithm ran.
* float32 error of y, ∂L/∂x and ∂L/∂w: ``max|a₃₂ - a₆₄| / max|a₆₄|`` against the float64 direct
  reference (``nnscratch.reference``) on the same (float32) data and weights.

For many shapes (auto against direct and PyTorch) see ``python benchmarks/bench.py --shapes-only``.
Nothing here asserts a speed: the machine is shared and noisy.
"""
import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

import about
import harness
import nnscratch

BATCH, C, F, HW, K = 64, 32, 64, 26, 3  # the seed's conv2: batch, in and out channels, input size, kernel
ALGORITHMS = ("direct", "winograd", "winograd_2x2")
IMPLS = tuple(f"{b} {a}" for b in ("cython", "numpy") for a in ALGORITHMS) + ("torch",)
MODES = (("forward", 1), ("forward_backward", 3))  # mode, FLOPs as a multiple of the forward's
ERRORS = ("y", "grad_x", "grad_w")
SETTINGS = ("quick", "threads", "repeats", "numpy_repeats", "warmup", "numpy_warmup")


def relative_error(actual, expected):
    """``max|actual - expected| / max|expected|``, in float64."""
    return float(np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max())


def build(torch, args, blas):
    """``({mode: {impl: Runner}}, {impl: errors})``: every implementation's runners, and its float32
    errors against the float64 direct reference (computed once, untimed)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, C, HW, HW), dtype=np.float32)
    g = rng.standard_normal((args.batch, F, HW - K + 1, HW - K + 1), dtype=np.float32)
    runners, errors = {mode: {} for mode, _ in MODES}, {}
    layers = {}
    for impl in IMPLS[:-1]:
        nnscratch.manual_seed(0)
        layers[impl] = nnscratch.Conv2d(C, F, K, algorithm=impl.split()[1])
    weight, bias = layers[IMPLS[0]].weight.data, layers[IMPLS[0]].bias.data  # every layer's (manual_seed(0) each)
    w64, b64 = weight.astype(np.float64), bias.astype(np.float64)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    expected = (nnscratch.reference.conv2d_forward(x64, w64, b64, (1, 1), (0, 0)),
                *nnscratch.reference.conv2d_backward(x64, w64, g64, (1, 1), (0, 0)))

    for impl, conv in layers.items():
        backend = impl.split()[0]

        @contextlib.contextmanager
        def context(backend=backend):
            with nnscratch.use_backend(backend), blas.limit() if backend == "numpy" else contextlib.nullcontext():
                yield

        def forward_backward(conv=conv):
            y = conv(x)
            for p in conv.parameters():
                p.grad = None  # as zero_grad() before a training backward
            return y, conv.backward(g, need_input_grad=True), conv.weight.grad

        slow = {"warmup": args.numpy_warmup, "cooldown": harness.OPENBLAS_COOLDOWN} if backend == "numpy" else {}
        repeats = args.numpy_repeats if backend == "numpy" else args.repeats
        runners["forward"][impl] = harness.Runner(lambda conv=conv: conv(x), repeats, context, **slow)
        runners["forward_backward"][impl] = harness.Runner(forward_backward, repeats, context, **slow)
        with context():
            errors[impl] = dict(zip(ERRORS, map(relative_error, forward_backward(), expected)))
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tw, tb = (torch.from_numpy(p.copy()).requires_grad_(True) for p in (weight, bias))
        tg = torch.from_numpy(g)

        def tforward():
            return torch.nn.functional.conv2d(tx, tw, tb)

        def tforward_backward():
            y = tforward()
            return (y, *torch.autograd.grad(y, [tx, tw, tb], tg)[:2])

        runners["forward"]["torch"] = harness.Runner(tforward, args.repeats)
        runners["forward_backward"]["torch"] = harness.Runner(tforward_backward, args.repeats)
        actual = (a.detach().numpy() for a in tforward_backward())
        errors["torch"] = dict(zip(ERRORS, map(relative_error, actual, expected)))
    return runners, errors


def print_table(report):
    fmt, figures = harness.fmt, report["modes"]
    headers = ["implementation", "fwd ms", "GFLOP/s", "×torch", "f+b ms", "GFLOP/s", "×torch", "error y", "∂L/∂x", "∂L/∂w"]
    lines = []
    for impl in IMPLS:
        cells = [impl]
        for mode, _ in MODES:
            cells += [fmt(figures[mode]["ms"][impl]), fmt(figures[mode]["gflops"][impl]),
                      fmt(figures[mode]["ratio_over_torch"][impl], "ratio")]
        errors = report["errors"].get(impl)
        lines.append(cells + [f"{errors[e]:.1e}" if errors else "-" for e in ERRORS])
    s = report["settings"]
    machine, versions = report["machine"], report["versions"]
    print(f"machine: {machine['cpu_model']}, {machine['available_cores']} of {machine['logical_cpus']} CPUs available, "
          f"load average {machine['loadavg_start']}; " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    print(f"seed conv2: Conv2d({C}, {F}, {K}) on ({s['batch']}, {C}, {HW}, {HW}) float32, "
          f"{report['threads']} thread(s); times in ms")
    harness.print_table(headers, lines)
    print(f"fwd: forward; f+b: forward + backward (∂L/∂x, ∂L/∂w, ∂L/∂b); GFLOP/s: the direct method's "
          f"{report['flops']['forward'] / 1e9:.2f} GFLOP forward, 3× that f+b, / time; ×torch: time / torch's time")
    print("error: max|float32 - float64| / max|float64|, the float64 direct reference on the same data")
    used = {impl: harness.cores_used([figures[mode]["cpu_wall_s"][impl] for mode, _ in MODES
                                      if impl in figures[mode]["cpu_wall_s"]]) for impl in IMPLS}
    print(f"medians of {s['repeats']} samples ({s['numpy_repeats']} numpy), interleaved round-robin; cores the process "
          f"got while timed (CPU / wall): " + ", ".join(f"{i} {v:.2f}" for i, v in used.items() if v is not None)
          + f"; load average at the end {report['machine']['loadavg_end']}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--threads", type=int, metavar="N", help="threads for nnscratch, torch and numpy's BLAS (default: all cores)")
    add("--repeats", type=int, metavar="N", help="samples of each cython and torch implementation (default 11; --quick 1)")
    add("--numpy-repeats", type=int, metavar="N", help="samples of each numpy-backend implementation (default 3; --quick 1)")
    add("--batch", type=int, metavar="N", help="batch size (default 64, the seed's; --quick 8)")
    add("--quick", action="store_true", help="batch 8, one sample each, no repeated calls within a sample: a smoke run")
    add("--json", type=Path, metavar="PATH", help="write every figure and the machine description as JSON")
    add("--no-torch", action="store_true", help="leave PyTorch out even when it is installed")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"threads": harness.available_cores(), "batch": 8 if quick else BATCH, "repeats": 1 if quick else 11,
                "numpy_repeats": 1 if quick else 3}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    args.warmup, args.numpy_warmup = (1, 0) if quick else (2, 1)
    return args


def main(argv=None):
    args = parse_args(argv)
    nnscratch.set_num_threads(args.threads)
    torch = None if args.no_torch else harness.import_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    report = {"schema": 1, "command": [sys.executable, *sys.argv], **about.describe_run(args.threads, torch),
              "settings": {"batch": args.batch, "in_channels": C, "out_channels": F, "input_hw": HW, "kernel": K,
                           "dtype": "float32", **{name: getattr(args, name) for name in SETTINGS}},
              "implementations": [i for i in IMPLS if i != "torch" or torch is not None]}
    forward_flops = 2 * args.batch * F * C * K * K * (HW - K + 1) ** 2
    report["flops"] = {mode: times * forward_flops for mode, times in MODES}
    runners, report["errors"] = build(torch, args, harness.BlasThreads(args.threads))
    report["modes"] = {}
    for mode, _ in MODES:
        harness.measure(runners[mode], args.warmup, adaptive=not args.quick, label=f"seed conv2 {mode}")
        figures = report["modes"][mode] = harness.summarize(runners[mode], IMPLS)
        figures["gflops"] = {i: report["flops"][mode] / (ms * 1e-3) / 1e9 if ms else None for i, ms in figures["ms"].items()}
        figures["ratio_over_torch"] = {i: harness.ratio(ms, figures["ms"]["torch"]) for i, ms in figures["ms"].items()}
    report["machine"]["loadavg_end"] = harness.loadavg()
    print_table(report)
    if args.json:
        harness.write_json(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The convolution shape table (issue 13): forward and forward+backward of one ``nnscratch.Conv2d``
(cython backend, float32) against PyTorch's ``F.conv2d`` on the CPU, shape by shape.

* forward: the layer's forward (bias included); PyTorch with autograd on, as in training.
* forward+backward: forward, then the input gradient dX and the weight (and bias) gradient dW;
  PyTorch as ``torch.autograd.grad`` of its output with respect to the input, weight and bias.
* effective GFLOP/s: the direct method's FLOPs, 2·N·F·C·KH·KW·OH·OW for the forward and 3× that
  for forward+backward, divided by the time, whatever the algorithm really computes; "% sgemm"
  is that rate as a share of the run's sgemm ceiling (``bench.py``'s ceiling measurement).
* algorithms: when ``nnscratch.Conv2d`` takes ``algorithm=`` ("auto" | "direct" | "winograd"),
  the table shows what "auto" chose for each shape (``conv.algorithm_for(input_shape)``) and also
  times ``algorithm="direct"`` on the 3×3 stride-1 shapes, so that the gain is visible.

Implementations are interleaved round-robin (``harness.measure``); figures are medians.
"""
import inspect

import numpy as np

import harness
from nnscratch import reference

# key, label, batch, in channels, out channels, input size, kernel, stride, padding
SHAPES = [
    ("c64_56", "64→64 56×56 3×3 p1", 16, 64, 64, 56, 3, 1, 1),
    ("c128_28", "128→128 28×28 3×3 p1", 8, 128, 128, 28, 3, 1, 1),
    ("c3_224", "3→64 224×224 7×7 s2 p3", 16, 3, 64, 224, 7, 2, 3),
    ("c256_14", "256→256 14×14 1×1", 16, 256, 256, 14, 1, 1, 0),
    ("conv1_b1", "seed conv1 1→32 28×28 3×3", 1, 1, 32, 28, 3, 1, 0),
    ("conv1_b64", "seed conv1 1→32 28×28 3×3", 64, 1, 32, 28, 3, 1, 0),
    ("conv1_b256", "seed conv1 1→32 28×28 3×3", 256, 1, 32, 28, 3, 1, 0),
    ("conv2_b1", "seed conv2 32→64 26×26 3×3", 1, 32, 64, 26, 3, 1, 0),
    ("conv2_b64", "seed conv2 32→64 26×26 3×3", 64, 32, 64, 26, 3, 1, 0),
    ("conv2_b256", "seed conv2 32→64 26×26 3×3", 256, 32, 64, 26, 3, 1, 0),
]
MODES = (("forward", 1), ("forward_backward", 3))  # mode, FLOPs as a multiple of the forward's
IMPLS = ("nnscratch", "direct", "torch")


def quick_batch(batch):
    """``--quick``: small batches that keep the rows distinct (16 and 8 -> 1, 64 -> 2, 256 -> 8)."""
    return 1 if batch <= 16 else batch // 32


def has_algorithm_option(nnscratch):
    """Whether this nnscratch's Conv2d takes ``algorithm=`` (the Winograd work)."""
    return "algorithm" in inspect.signature(nnscratch.Conv2d).parameters


def conv_flops(n, f, c, kh, kw, oh, ow):
    """The direct method's multiply-adds × 2 of one convolution forward."""
    return 2 * n * f * c * kh * kw * oh * ow


def describe(key, quick):
    """The figures of one shape that do not depend on timing."""
    _, label, batch, c, f, size, k, stride, pad = next(s for s in SHAPES if s[0] == key)
    n = quick_batch(batch) if quick else batch
    out = reference.output_size(size, k, stride, pad)
    flops = conv_flops(n, f, c, k, k, out, out)
    return {"label": label, "batch": n, "in_channels": c, "out_channels": f, "input_hw": [size, size],
            "kernel": [k, k], "stride": stride, "padding": pad, "output_hw": [out, out],
            "flops": {mode: times * flops for mode, times in MODES}}


def build_runners(nnscratch, torch, shape, repeats):
    """``({mode: {impl: Runner}}, algorithm "auto" chose or None)`` for one shape (see :func:`describe`)."""
    n, c, f, (h, w), (k, _), stride, pad = (shape[key] for key in (
        "batch", "in_channels", "out_channels", "input_hw", "kernel", "stride", "padding"))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(n, c, h, w)).astype(np.float32)
    g = rng.standard_normal((n, f, *shape["output_hw"]), dtype=np.float32)
    option = has_algorithm_option(nnscratch)
    algorithms = {"nnscratch": "auto"} if option else {"nnscratch": None}
    if option and k == 3 and stride == 1:
        algorithms["direct"] = "direct"
    runners = {mode: {} for mode, _ in MODES}
    chosen = None

    def cython():
        return nnscratch.use_backend("cython")

    for impl, algorithm in algorithms.items():
        kwargs = {} if algorithm is None else {"algorithm": algorithm}
        nnscratch.manual_seed(0)
        conv = nnscratch.Conv2d(c, f, k, stride=stride, padding=pad, **kwargs)
        if algorithm == "auto":
            chosen = conv.algorithm_for(x.shape)

        def forward_backward(conv=conv):
            conv(x)
            for p in conv.parameters():
                p.grad = None  # as zero_grad() before a training backward
            return conv.backward(g, need_input_grad=True)

        runners["forward"][impl] = harness.Runner(lambda conv=conv: conv(x), repeats, cython)
        runners["forward_backward"][impl] = harness.Runner(forward_backward, repeats, cython)
    if torch is not None:
        weight, bias = conv.weight.data, conv.bias.data  # the same weights as nnscratch's (manual_seed(0) for each)
        tx = torch.from_numpy(x).requires_grad_(True)
        tw = torch.from_numpy(weight.copy()).requires_grad_(True)
        tb = torch.from_numpy(bias.copy()).requires_grad_(True)
        tg = torch.from_numpy(g)
        conv2d = torch.nn.functional.conv2d

        def tforward():
            return conv2d(tx, tw, tb, stride, pad)

        runners["forward"]["torch"] = harness.Runner(tforward, repeats)
        runners["forward_backward"]["torch"] = harness.Runner(
            lambda: torch.autograd.grad(tforward(), [tx, tw, tb], tg), repeats)
    return runners, chosen


def measure(nnscratch, torch, repeats, warmup, quick, ceiling_runner=None):
    """Every shape's rows (``{key: figures}``); ``ceiling_runner`` (the sgemm ceiling), when given,
    is sampled in the rounds of the first shape's forward."""
    rows = {}
    for key, *_ in SHAPES:
        shape = describe(key, quick)
        runners, chosen = build_runners(nnscratch, torch, shape, repeats)
        shape["algorithm"] = chosen
        for mode, _ in MODES:
            if ceiling_runner is not None:
                runners[mode]["sgemm"], ceiling_runner = ceiling_runner, None
            harness.measure(runners[mode], warmup, adaptive=not quick, label=f"{shape['label']} N={shape['batch']} {mode}")
            figures = harness.summarize(runners[mode], IMPLS)
            figures["ratio_nnscratch_over_torch"] = harness.ratio(figures["ms"]["nnscratch"], figures["ms"]["torch"])
            figures["ratio_direct_over_nnscratch"] = harness.ratio(figures["ms"]["direct"], figures["ms"]["nnscratch"])
            figures["gflops"] = {impl: (shape["flops"][mode] / (ms * 1e-3) / 1e9 if ms else None)
                                 for impl, ms in figures["ms"].items()}
            shape[mode] = figures
        rows[key] = shape
    return rows


def add_ceiling(rows, ceiling_gflops):
    """Each row's effective GFLOP/s as a percentage of the sgemm ceiling."""
    for shape in rows.values():
        for mode, _ in MODES:
            shape[mode]["pct_of_sgemm_ceiling"] = {
                impl: (100 * rate / ceiling_gflops if rate and ceiling_gflops else None)
                for impl, rate in shape[mode]["gflops"].items()}


FAULTS_WORTH_NAMING = 100  # page faults per call above which the table names them (each costs ~1 µs)


def fault_lines(rows):
    """A line per shape and mode where an implementation page-faulted more than ``FAULTS_WORTH_NAMING``
    times per call (its time then includes the kernel mapping and zeroing fresh memory)."""
    lines = []
    for shape in rows.values():
        for mode, _ in MODES:
            faults = {impl: n for impl, n in shape[mode].get("faults_per_call", {}).items() if n is not None}
            if any(n > FAULTS_WORTH_NAMING for n in faults.values()):
                lines.append(f"page faults per call, {shape['label']} N={shape['batch']} {mode}: "
                             + ", ".join(f"{impl} {n:.0f}" for impl, n in faults.items()))
    return lines


def print_table(table):
    """The shape table as text (``table``: the ``"shapes"`` part of the report)."""
    rows, option = table["rows"], table["algorithm_option"]
    headers = ["convolution", "N"] + (["auto"] if option else []) + [
        "fwd nn", "fwd torch", "nn/torch", "GFLOP/s", "% sgemm",
        "f+b nn", "f+b torch", "nn/torch", "GFLOP/s", "% sgemm"] + (["fwd direct", "f+b direct"] if option else [])
    lines = []
    for shape in rows.values():
        cells = [shape["label"], str(shape["batch"])] + ([shape["algorithm"] or "-"] if option else [])
        for mode, _ in MODES:
            figures = shape[mode]
            cells += [harness.fmt(figures["ms"]["nnscratch"]), harness.fmt(figures["ms"]["torch"]),
                      harness.fmt(figures["ratio_nnscratch_over_torch"], "ratio"), harness.fmt(figures["gflops"]["nnscratch"]),
                      harness.fmt(figures["pct_of_sgemm_ceiling"]["nnscratch"], "pct")]
        if option:
            cells += [harness.fmt(shape[mode]["ms"]["direct"]) for mode, _ in MODES]
        lines.append(cells)
    print("convolution shapes: nnscratch.Conv2d (cython, float32) against torch F.conv2d (CPU), times in ms")
    harness.print_table(headers, lines)
    print(f"fwd: forward; f+b: forward + backward (dX and dW); GFLOP/s: effective, nnscratch, the direct method's "
          f"2·N·F·C·KH·KW·OH·OW forward and 3× that forward+backward, / time; % sgemm: of the run's ceiling "
          f"({harness.fmt(table['sgemm_ceiling_gflops'])} GFLOP/s)"
          + ("; auto: the algorithm Conv2d(algorithm='auto') chose, 'direct' timed beside it on 3×3 stride-1 shapes"
             if option else "; one algorithm (this Conv2d has no algorithm= option)"))
    print(f"heap grown by {table['heap_grown_mib']} MiB before the table (harness.grow_heap)" if table["heap_grown_mib"]
          else "heap as the process left it (--no-grow-heap)")
    for line in fault_lines(rows):
        print(line)
    used = {impl: harness.cores_used([shape[mode]["cpu_wall_s"][impl] for shape in rows.values() for mode, _ in MODES
                                      if impl in shape[mode]["cpu_wall_s"]]) for impl in IMPLS}
    print(f"medians of {table['repeats']} samples, nnscratch and torch interleaved round-robin"
          + (" (--quick: small batches)" if table["quick"] else "") + "; cores the process got while timed (CPU / wall): "
          + ", ".join(f"{impl} {value:.2f}" for impl, value in used.items() if value is not None))

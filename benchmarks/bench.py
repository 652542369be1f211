"""Speed and memory of the seed's Net (batch 64, float32): nnscratch's cython and numpy backends
against PyTorch (optional), on this machine.

Run from the repository root::

    python benchmarks/bench.py                    # the full table (a few minutes on 2 cores)
    python benchmarks/bench.py --quick --json out.json   # smoke run (what tests/test_bench.py does)
    python benchmarks/bench.py --threads 1 --repeats 30
    python benchmarks/bench.py --epoch            # also time one real MNIST epoch (cython and torch)
    python benchmarks/bench.py --import-effects   # also: the train step with and without what the import used to change
    python benchmarks/bench.py --shapes-only      # only the convolution shape table (benchmarks/shapes.py)

It keeps freed memory for reuse (``nnscratch.malloc.keep_freed_memory()``) as a training script may,
and before the shape table grows the heap by ``HEAP_MIB`` (``harness.grow_heap``) so that no
implementation page-faults its large buffers (``--no-grow-heap``: as the process left it).

What is measured
----------------
* Per-op rows: the layers of the seed's Net, called as the network calls them (layer forward and
  layer backward, bias add and bias gradient included): conv1 (1→32 on 28×28), conv2 (32→64 on
  26×26), max-pool 2 (64 channels, 24×24), fc1 (9216→128). The inputs are the real activations of
  the network on the first batch of a shuffled MNIST epoch when the files are on the machine
  (random images otherwise, or with ``--random-batch``): PyTorch's max-pool is faster on real
  images (``nets.seed_batch``). conv1's backward computes the weight (and bias) gradient only, as
  in training (the image needs no gradient); the other backwards also compute the input gradient.
  PyTorch: ``F.conv2d`` / ``F.max_pool2d`` / ``F.linear`` forwards with autograd on (as in
  training), backwards as ``torch.autograd.grad`` of the same outputs.
* train step: ``zero_grad``, forward in training mode (dropout active), ``NLLLoss``, backward
  (no gradient for the input images), ``SGD(lr=0.01, momentum=0.9).step()``. All networks start
  from the same weights (nnscratch's ``state_dict`` copied into the PyTorch Net).
* inference: forward of the whole Net in eval mode (PyTorch under ``torch.no_grad()``).
* Timing (``benchmarks/harness.py``): the implementations of a row interleaved round-robin in
  this process after a warm-up; medians. The slow numpy backend gets fewer samples, spread evenly.
* GFLOP/s (cython kernel): 2·N·F·C·KH·KW·OH·OW per convolution forward; backward = 2× that when
  the input gradient is computed (conv2), 1× for conv1 (weight gradient only); fc: 2·N·in·out
  forward, 2× that backward. Bias adds, bias gradients and the pooling are not counted.
* sgemm ceiling: numpy float32 matmul of conv2's im2col shape (36864×288 @ 288×64, the same FLOPs
  as conv2's forward) with the same thread count, sampled in the same rounds as conv2's forward;
  "% sgemm" = the row's GFLOP/s as a share of it.
* Peak memory (``benchmarks/memory.py``): each implementation trains a few steps in a fresh
  subprocess; the figure is the peak resident set size (VmHWM, reset just before training through
  /proc/self/clear_refs) minus the resident set size just before the first step.
* Epoch: the median train step × 938 (= ceil(60000 / 64)); ``--epoch`` really runs one MNIST
  epoch (DataLoader, batch 64, shuffled, ``prepare_images``) with the cython backend and, when
  available, PyTorch, interleaved batch by batch (``benchmarks/epoch.py``).
* Convolution shapes (a second table, ``benchmarks/shapes.py``): one Conv2d's forward and
  forward+backward against PyTorch over ten shapes, with effective GFLOP/s against the ceiling.

Nothing here asserts a speed: machines are shared and noisy.
"""
import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

import about
import epoch
import harness
import memory
import nets
import nnscratch
import shapes
from nnscratch import malloc

BATCH = nets.BATCH
IMPLS = ("cython", "numpy", "torch")
HEAP_MIB = 1024  # grown before the shape table: more than any shape's buffers (the 7×7 stem's f+b: ~0.3 GB)
CEILING_SHAPE = (36864, 288, 64)  # conv2's im2col product: (N·OH·OW) × (C·KH·KW) @ (C·KH·KW) × F
ROWS = [  # key, label, flops (None: not counted)
    ("conv1_forward", "conv1 forward", shapes.conv_flops(BATCH, 32, 1, 3, 3, 26, 26)),
    ("conv1_backward", "conv1 backward (dW only)", shapes.conv_flops(BATCH, 32, 1, 3, 3, 26, 26)),
    ("conv2_forward", "conv2 forward", shapes.conv_flops(BATCH, 64, 32, 3, 3, 24, 24)),
    ("conv2_backward", "conv2 backward (dX, dW)", 2 * shapes.conv_flops(BATCH, 64, 32, 3, 3, 24, 24)),
    ("maxpool_forward", "max-pool 2 forward", None),
    ("maxpool_backward", "max-pool 2 backward", None),
    ("fc1_forward", "fc1 forward", 2 * BATCH * 9216 * 128),
    ("fc1_backward", "fc1 backward (dX, dW)", 2 * 2 * BATCH * 9216 * 128),
    ("train_step", "train step (fwd+NLL+bwd+SGD)", None),
    ("inference_forward", "inference forward (eval)", None),
]


# ============================================================================= the seed Net's rows

def build_cases(torch, args, blas, backends, batch):
    """``{row key: {implementation: Runner}}`` for every row, plus the objects the runners use."""
    from nnscratch import models

    nnscratch.manual_seed(0)
    state = models.seed_net().state_dict()
    x, t = batch
    # the real activations of the network, as per-op inputs (computed once, shared by everyone)
    probe = models.seed_net()
    probe.load_state_dict(state)
    with nnscratch.use_backend(backends[0]):
        a1 = np.maximum(probe.conv1(x), 0)                  # conv2's input (64, 32, 26, 26)
        a2 = np.maximum(probe.conv2(a1), 0)                 # the pool's input (64, 64, 24, 24)
        a3 = np.ascontiguousarray(probe.pool(a2).reshape(BATCH, -1))  # fc1's input (64, 9216)
    rng = np.random.default_rng(1)
    grads = {op: rng.standard_normal(shape, dtype=np.float32) for op, shape in  # upstream gradients
             (("conv1", (BATCH, 32, 26, 26)), ("conv2", (BATCH, 64, 24, 24)), ("maxpool", (BATCH, 64, 12, 12)),
              ("fc1", (BATCH, 128)))}
    inputs = {"conv1": x, "conv2": a1, "maxpool": a2, "fc1": a3}
    op_repeats = {"cython": args.repeats, "numpy": args.numpy_repeats, "torch": args.repeats}
    step_repeats = {"cython": args.step_repeats, "numpy": args.numpy_step_repeats, "torch": args.step_repeats}
    cases = {key: {} for key, _, _ in ROWS}
    keep = {}

    for backend in backends:
        def context(backend=backend):
            stack = contextlib.ExitStack()
            stack.enter_context(nnscratch.use_backend(backend))
            if backend == "numpy":
                stack.enter_context(blas.limit())
            return stack

        slow = {"warmup": args.numpy_warmup, "cooldown": harness.OPENBLAS_COOLDOWN} if backend == "numpy" else {}
        net, eval_net = models.seed_net(), models.seed_net()
        net.load_state_dict(state)
        eval_net.load_state_dict(state)
        net.train()
        eval_net.eval()
        for op, layer in {"conv1": net.conv1, "conv2": net.conv2, "maxpool": net.pool, "fc1": net.fc1}.items():
            params = list(layer.parameters())

            def backward(layer=layer, g=grads[op], need=op != "conv1", params=params):
                for p in params:
                    p.grad = None  # as zero_grad() before a training backward
                return layer.backward(g, need_input_grad=need)

            def forward(layer=layer, xin=inputs[op]):
                return layer(xin)  # also the setup of the backward: the forward whose saved input it uses

            cases[f"{op}_forward"][backend] = harness.Runner(forward, op_repeats[backend], context, **slow)
            cases[f"{op}_backward"][backend] = harness.Runner(backward, op_repeats[backend], context, forward, **slow)
        step = nets.seed_step(nnscratch, net)
        cases["train_step"][backend] = harness.Runner(lambda step=step: step(x, t), step_repeats[backend], context, **slow)
        cases["inference_forward"][backend] = harness.Runner(lambda n=eval_net: n(x), step_repeats[backend], context, **slow)
        keep[backend] = (net, eval_net)

    if torch is not None:
        F = torch.nn.functional
        torch.manual_seed(0)
        tnet, teval = nets.torch_twin(torch, state).train(), nets.torch_twin(torch, state).eval()
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        tin = {op: torch.from_numpy(v.copy()).requires_grad_(op != "conv1") for op, v in inputs.items()}
        tgrad = {op: torch.from_numpy(g) for op, g in grads.items()}
        tfun = {"conv1": lambda: tnet.conv1(tin["conv1"]), "conv2": lambda: tnet.conv2(tin["conv2"]),
                "maxpool": lambda: F.max_pool2d(tin["maxpool"], 2), "fc1": lambda: tnet.fc1(tin["fc1"])}
        twrt = {  # what each backward differentiates with respect to (as in training)
            "conv1": [tnet.conv1.weight, tnet.conv1.bias],
            "conv2": [tin["conv2"], tnet.conv2.weight, tnet.conv2.bias],
            "maxpool": [tin["maxpool"]],
            "fc1": [tin["fc1"], tnet.fc1.weight, tnet.fc1.bias],
        }
        saved = {}
        for op, fn in tfun.items():
            def backward(op=op):
                return torch.autograd.grad(saved[op], twrt[op], tgrad[op], retain_graph=True)

            def setup(op=op, fn=fn):
                saved[op] = fn()

            cases[f"{op}_forward"]["torch"] = harness.Runner(fn, op_repeats["torch"])
            cases[f"{op}_backward"]["torch"] = harness.Runner(backward, op_repeats["torch"], setup=setup)
        tstep = nets.torch_train_step(torch, tnet, torch.optim.SGD(tnet.parameters(), lr=nets.LR, momentum=nets.MOMENTUM))

        def tinfer():
            with torch.no_grad():
                return teval(tx)

        cases["train_step"]["torch"] = harness.Runner(lambda: tstep(tx, tt), step_repeats["torch"])
        cases["inference_forward"]["torch"] = harness.Runner(tinfer, step_repeats["torch"])
        keep["torch"] = (tnet, teval, saved)
    cases["conv2_forward"]["sgemm"] = harness.sgemm_runner(CEILING_SHAPE, args.repeats, blas)  # sampled in the same rounds
    return cases, keep


def measure_rows(cases, args):
    """The seed Net's rows (``{key: figures}``) and the sgemm ceiling's runner, sampled with conv2's forward."""
    rows = {}
    for key, label, flops in ROWS:
        harness.measure(cases[key], args.warmup, adaptive=not args.quick, label=label)
        row = rows[key] = {"label": label, "unit": "ms", "flops": flops, **harness.summarize(cases[key], IMPLS)}
        ms = row["ms"]
        row["ratio_cython_over_torch"] = harness.ratio(ms["cython"], ms["torch"])
        row["speedup_numpy_over_cython"] = harness.ratio(ms["numpy"], ms["cython"])
        row["gflops"] = {impl: (flops / (ms[impl] * 1e-3) / 1e9 if flops and ms[impl] else None) for impl in IMPLS}
    return rows, cases["conv2_forward"]["sgemm"]


# ============================================================================= output

def print_seed_table(report):
    fmt, ratio = harness.fmt, harness.ratio
    headers = ["", "unit", "cython", "numpy", "torch", "cy/torch", "np/cy", "GFLOP/s cy", "% sgemm"]
    lines = []
    for key, label, flops in ROWS:
        row = report["rows"][key]
        ms = row["ms"]
        lines.append([label, "ms", fmt(ms["cython"]), fmt(ms["numpy"]), fmt(ms["torch"]),
                      fmt(row["ratio_cython_over_torch"], "ratio"), fmt(row["speedup_numpy_over_cython"], "ratio"),
                      fmt(row["gflops"]["cython"]) if flops else "", fmt(row["pct_of_sgemm_ceiling"], "pct") if flops else ""])
    lines.append(None)
    est = report["epoch_estimate_s"]
    lines.append(["estimated epoch (median step × 938)", "s", fmt(est["cython"]), fmt(est["numpy"]), fmt(est["torch"]),
                  fmt(ratio(est["cython"], est["torch"]), "ratio"), fmt(ratio(est["numpy"], est["cython"]), "ratio"), "", ""])
    if report.get("epoch_measured"):
        measured = report["epoch_measured"]["seconds"]
        label = "measured MNIST epoch" + (" (extrapolated)" if report["epoch_measured"]["extrapolated"] else "")
        lines.append([label, "s", fmt(measured.get("cython")), "-", fmt(measured.get("torch")),
                      fmt(ratio(measured.get("cython"), measured.get("torch")), "ratio"), "", "", ""])
    mem = report["memory"]
    if mem is not None:
        mib = mem["mib"]
        lines.append([f"peak RSS increase, {mem['steps']} train steps", "MiB", fmt(mib["cython"]), fmt(mib["numpy"]),
                      fmt(mib["torch"]), fmt(mem["ratio_cython_over_torch"], "ratio"),
                      fmt(ratio(mib["numpy"], mib["cython"]), "ratio"), "", ""])
    harness.print_table(headers, lines)
    ceiling = report["sgemm_ceiling"]
    print(f"sgemm ceiling: numpy float32 matmul {CEILING_SHAPE[0]}×{CEILING_SHAPE[1]} @ {CEILING_SHAPE[1]}×{CEILING_SHAPE[2]}, "
          f"{report['threads']} threads: {fmt(ceiling['ms'])} ms = {fmt(ceiling['gflops'])} GFLOP/s; "
          f"conv2 forward (cython) = {fmt(ceiling['conv2_forward_pct'], 'pct')} of it")
    print("cy/torch: cython time / torch time (>1: slower than PyTorch); np/cy: numpy / cython (speed-up over the reference)")
    print("GFLOP/s: conv forward 2·N·F·C·KH·KW·OH·OW; backward 2× that (dX and dW) or 1× for conv1 (dW only); "
          "fc forward 2·N·in·out, backward 2×")
    used = report["cores_used"]
    print(f"cores the process really got while timed (CPU time / wall time; {report['threads']} threads asked): "
          + ", ".join(f"{impl} {used[impl]:.2f}" for impl in (*IMPLS, "sgemm") if used.get(impl) is not None)
          + f"; load average at the end {report['machine']['loadavg_end']}"
          + (f"; all CPUs busy {100 * busy['busy_fraction']:.0f}% of the run (any process)"
             if (busy := report["machine"].get("during_run")) else ""))
    counts = report["settings"]
    print(f"the batch: {'the first of a shuffled MNIST epoch' if counts['batch_source'] == 'mnist' else 'random images'}; "
          f"medians of {counts['repeats']} samples per op ({counts['numpy_repeats']} numpy), {counts['step_repeats']} per "
          f"step/inference ({counts['numpy_step_repeats']} numpy), interleaved round-robin after "
          f"{counts['warmup']} warm-up call(s) ({counts['numpy_warmup']} numpy)")


# ============================================================================= main

SETTINGS = ("repeats", "step_repeats", "numpy_repeats", "numpy_step_repeats", "shape_repeats", "warmup", "numpy_warmup",
            "quick", "threads")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--repeats", type=int, default=None, metavar="N", help="samples per op for cython and torch (default 20; --quick: 2)")
    add("--step-repeats", type=int, default=None, metavar="N",
        help="samples of the train step and inference (default: 3/4 of --repeats, i.e. 15)")
    add("--numpy-repeats", type=int, default=None, metavar="N",
        help="samples per op for the slow numpy backend (default min(5, --repeats))")
    add("--numpy-step-repeats", type=int, default=None, metavar="N",
        help="numpy backend's train step / inference samples (default min(3, --step-repeats))")
    add("--shape-repeats", type=int, default=None, metavar="N",
        help="samples per row of the shape table (default 10; --quick: 1)")
    add("--warmup", type=int, default=None, metavar="N", help="warm-up calls per implementation (default 2)")
    add("--threads", type=int, default=None, metavar="N",
        help="threads for nnscratch's kernels, torch and numpy's BLAS (default: all available cores)")
    add("--quick", action="store_true", help="tiny repeats and batches of the shape table: a smoke run (the test uses it)")
    add("--json", type=Path, metavar="PATH", help="write every figure and the machine description as JSON")
    add("--no-torch", action="store_true", help="leave PyTorch out even when it is installed")
    add("--random-batch", action="store_true", help="time the seed Net on random images even when MNIST is on the machine")
    add("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    add("--no-grow-heap", action="store_true",
        help="time the shape table with the heap as the process left it (default: grown first, see harness.grow_heap)")
    add("--memory-steps", type=int, default=None, metavar="N",
        help="training steps per memory subprocess (default 5, numpy 3; --quick: 2, numpy 1)")
    tables = parser.add_mutually_exclusive_group()
    tables.add_argument("--no-shapes", action="store_true", help="skip the convolution shape table")
    tables.add_argument("--shapes-only", action="store_true", help="only the convolution shape table (and the sgemm ceiling)")
    add("--epoch", action="store_true", help="also time one real MNIST epoch (cython, and torch when available); 938 steps each")
    add("--epoch-batches", type=int, default=None, metavar="N",
        help="with --epoch: stop after N batches and extrapolate to the epoch (to try the option out)")
    add("--import-effects", action="store_true",
        help="also time the train step as the old import left the process (scipy's BLAS at one thread for good, malloc "
             "tuned) against the plain import and the malloc opt-in, in fresh processes (benchmarks/import_effects.py; "
             "about a minute, --quick: seconds)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"repeats": 2 if quick else 20, "shape_repeats": 1 if quick else 10, "warmup": 1 if quick else 2,
                "threads": harness.available_cores()}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.step_repeats is None:
        args.step_repeats = 2 if quick else max(1, round(args.repeats * 3 / 4))
    if args.numpy_repeats is None:
        args.numpy_repeats = 1 if quick else min(5, args.repeats)
    if args.numpy_step_repeats is None:
        args.numpy_step_repeats = 1 if quick else min(3, args.step_repeats)
    for name in (*SETTINGS[:5], "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    args.numpy_warmup = 0 if quick else min(1, args.warmup)  # slow, and nothing in it needs warming up twice
    if args.epoch_batches is not None and args.epoch_batches < 1:
        parser.error(f"--epoch-batches must be at least 1, got {args.epoch_batches}")
    return args


def main(argv=None):
    args = parse_args(argv)
    malloc.keep_freed_memory()  # a training benchmark, run as a training script would
    stat_start = harness.proc_stat()
    nnscratch.set_num_threads(args.threads)
    torch = None if args.no_torch else harness.import_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    blas = harness.BlasThreads(args.threads)
    x, t, batch_source = nets.seed_batch(random=args.random_batch)
    have_cython = about.cython_available()
    impls = [i for i in IMPLS if (i != "cython" or have_cython) and (i != "torch" or torch is not None)]
    report = {"schema": 2, "command": [sys.executable, *sys.argv], **about.describe_run(args.threads, torch),
              "implementations": impls,
              "settings": {"batch": BATCH, "batch_source": batch_source, "dtype": "float32", "interleaved": True,
                           **{name: getattr(args, name) for name in SETTINGS}, "seed_net": not args.shapes_only,
                           "shapes": not args.no_shapes, "sgd": {"lr": nets.LR, "momentum": nets.MOMENTUM}},
              "conventions": about.CONVENTIONS, "rows": None, "cores_used": None, "epoch_estimate_s": None, "memory": None,
              "epoch_measured": None, "import_effects": None, "shapes": None, "sgemm_ceiling": None}
    about.print_header(report)
    print("measuring (progress on stderr) ...", file=sys.stderr)

    ceiling = None
    if not args.shapes_only:
        cases, keep = build_cases(torch, args, blas, ["cython", "numpy"][0 if have_cython else 1:], (x, t))
        rows, ceiling = measure_rows(cases, args)
        del keep, cases
        report["cores_used"] = {impl: harness.cores_used([row["cpu_wall_s"][impl] for row in rows.values()
                                                          if impl in row["cpu_wall_s"]]) for impl in IMPLS}
        report["cores_used"]["sgemm"] = harness.cores_used(ceiling.sampled_cpu())
        step_ms = rows["train_step"]["ms"]
        report["epoch_estimate_s"] = {impl: (step_ms[impl] * 1e-3 * nets.EPOCH_STEPS if step_ms[impl] else None)
                                      for impl in IMPLS} | {"steps": nets.EPOCH_STEPS}
        report["rows"] = rows
    if not args.shapes_only and not args.no_memory:
        steps, numpy_steps = args.memory_steps or (2 if args.quick else 5), args.memory_steps or (1 if args.quick else 3)
        details = memory.measure(impls, args.threads, steps, numpy_steps)
        mib = {impl: (details[impl]["increase_mib"] if details.get(impl) else None) for impl in IMPLS}
        report["memory"] = {"steps": steps, "numpy_steps": numpy_steps, "mib": mib, "details": details,
                            "ratio_cython_over_torch": harness.ratio(mib["cython"], mib["torch"]),
                            "method": next((d["method"] for d in details.values() if d), None)}
    if not args.no_shapes and have_cython:
        if ceiling is None:  # --shapes-only: the ceiling is sampled with the first shape instead
            ceiling = harness.sgemm_runner(CEILING_SHAPE, args.shape_repeats, blas)
        heap_mib = 0 if args.no_grow_heap else (32 if args.quick else HEAP_MIB)
        harness.grow_heap(heap_mib)
        table = shapes.measure(nnscratch, torch, args.shape_repeats, args.warmup, args.quick,
                               ceiling_runner=None if ceiling.samples else ceiling)
        report["shapes"] = {"rows": table, "repeats": args.shape_repeats, "quick": args.quick,
                            "heap_grown_mib": heap_mib,
                            "algorithm_option": shapes.has_algorithm_option(nnscratch), "implementations": list(shapes.IMPLS)}
    elif not args.no_shapes:
        print("bench: the shape table needs the cython backend; skipped", file=sys.stderr)
    if ceiling is not None:
        report["sgemm_ceiling"] = harness.sgemm_figures(ceiling, CEILING_SHAPE, args.threads)
        rate = report["sgemm_ceiling"]["gflops"]
        if report["rows"]:
            for row in report["rows"].values():
                cython = row["gflops"]["cython"]
                row["pct_of_sgemm_ceiling"] = 100 * cython / rate if row["flops"] and cython else None
            report["sgemm_ceiling"]["conv2_forward_pct"] = report["rows"]["conv2_forward"]["pct_of_sgemm_ceiling"]
        if report["shapes"]:
            report["shapes"]["sgemm_ceiling_gflops"] = rate
            shapes.add_ceiling(report["shapes"]["rows"], rate)
    if args.epoch and have_cython:
        report["epoch_measured"] = epoch.measure(nnscratch, torch, args.epoch_batches)
    if args.import_effects and have_cython:
        import import_effects  # benchmarks/, on sys.path when this file runs as a script
        quick = args.quick
        report["import_effects"] = import_effects.measure(args.threads, rounds=1 if quick else 4, steps=3 if quick else 30,
                                                          warmup=1 if quick else 5)
    if (args.epoch or args.import_effects) and not have_cython:
        print("bench: --epoch and --import-effects need the cython backend; skipped", file=sys.stderr)

    report["machine"]["loadavg_end"] = harness.loadavg()
    report["machine"]["during_run"] = harness.machine_busy(stat_start, harness.proc_stat())
    if report["rows"]:
        print_seed_table(report)
    if report["epoch_measured"]:
        print("measured epoch, step by step:", *epoch.describe(report["epoch_measured"]), sep="\n")
    if report["shapes"]:
        print()
        shapes.print_table(report["shapes"])
    if report["import_effects"] is not None:
        print("\ntrain step, cython, by what the import leaves in the process (fresh processes, alternating):")
        for line in import_effects.describe(report["import_effects"]):
            print(line)
    if args.json:
        harness.write_json(args.json, report)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

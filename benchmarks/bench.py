"""Speed and memory of the seed's Net (batch 64, float32): nnscratch's cython and numpy backends
against PyTorch (optional), on this machine.

Run from the repository root::

    python benchmarks/bench.py                    # the full table (a few minutes on 2 cores)
    python benchmarks/bench.py --quick --json out.json   # smoke run (what tests/test_bench.py does)
    python benchmarks/bench.py --threads 1 --repeats 30
    python benchmarks/bench.py --epoch            # also time one real MNIST epoch (cython and torch)
    python benchmarks/bench.py --import-effects   # also: the train step with and without what the import used to change

The benchmark keeps freed memory for reuse (``nnscratch.malloc.keep_freed_memory()``, as a training
script may): importing nnscratch no longer does it (``benchmarks/import_effects.py`` measures both).

What is measured
----------------
* Per-op rows: the layers of the seed's Net, called as the network calls them (layer forward and
  layer backward, bias add and bias gradient included): conv1 (1→32 on 28×28), conv2 (32→64 on
  26×26), max-pool 2 (64 channels, 24×24), fc1 (9216→128). The inputs are the real activations of
  the network on a random batch. conv1's backward computes the weight (and bias) gradient only, as
  in training (the image needs no gradient); the other backwards also compute the input gradient.
  PyTorch: ``F.conv2d`` / ``F.max_pool2d`` / ``F.linear`` forwards with autograd on (as in
  training), backwards as ``torch.autograd.grad`` of the same outputs.
* train step: ``zero_grad``, forward in training mode (dropout active), ``NLLLoss``, backward
  (no gradient for the input images), ``SGD(lr=0.01, momentum=0.9).step()``. All networks start
  from the same weights (nnscratch's ``state_dict`` copied into the PyTorch Net).
* inference: forward of the whole Net in eval mode (PyTorch under ``torch.no_grad()``).
* Timing: per row, every implementation is warmed up, then the implementations are interleaved
  round-robin in this one process (one sample of each per round, the order rotating every round)
  so that machine noise hits them alike; the figure is the median of the samples. A sample of a
  fast call averages several calls (about 20 ms worth). The numpy backend is slow, so it gets fewer
  samples, spread evenly over the rounds.
* GFLOP/s (cython kernel): 2·N·F·C·KH·KW·OH·OW per convolution forward; backward = 2× that when
  the input gradient is computed (conv2), 1× for conv1 (weight gradient only); fc: 2·N·in·out
  forward, 2× that backward. Bias adds, bias gradients and the pooling are not counted.
* sgemm ceiling: numpy float32 matmul of conv2's im2col shape (36864×288 @ 288×64, the same FLOPs
  as conv2's forward) with the same thread count, sampled in the same rounds as conv2's forward;
  "% sgemm" = the row's GFLOP/s as a share of it.
* Peak memory: each implementation trains a few steps in a fresh subprocess; the figure is the
  peak resident set size (VmHWM, reset just before training through /proc/self/clear_refs) minus
  the resident set size just before the first step.
* Epoch: the median train step × 938 (= ceil(60000 / 64)); ``--epoch`` really runs one MNIST
  epoch (DataLoader, batch 64, shuffled, ``prepare_images``) with the cython backend and, when
  available, PyTorch, interleaved batch by batch.

Nothing here asserts a speed: machines are shared and noisy.
"""
import argparse
import contextlib
import gc
import hashlib
import importlib.util
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import nnscratch
from nnscratch import malloc

REPO = Path(__file__).resolve().parent.parent
# The seed's PyTorch Net lives with the tests (tests/torch_reference.py), outside the installed
# package since users never import it; loaded here by path.
_spec = importlib.util.spec_from_file_location("torch_reference", REPO / "tests" / "torch_reference.py")
torch_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_reference)

BATCH = 64
EPOCH_STEPS = math.ceil(60000 / BATCH)  # 938
IMPLS = ("cython", "numpy", "torch")
LR, MOMENTUM = 0.01, 0.9
CEILING_SHAPE = (36864, 288, 64)  # conv2's im2col product: (N·OH·OW) × (C·KH·KW) @ (C·KH·KW) × F
SAMPLE_SECONDS = 0.02  # a sample of a fast call repeats it until about this long
GAP_SECONDS = 0.005  # pause between two measurements (lets spinning thread pools go idle)
# OpenBLAS's idle worker threads busy-wait for about 0.1 s after a call (measured here: ~80 ms of
# CPU during a 300 ms sleep after numpy's sgemm), stealing a core from whatever is timed next; so
# samples that used numpy's multi-threaded BLAS (numpy backend, sgemm ceiling) are followed by a
# longer pause.
OPENBLAS_COOLDOWN = 0.15


# ============================================================================= imports

def import_torch():
    try:
        import torch
        return torch
    except Exception:  # not installed, or broken: the column shows "-"
        return None


class BlasThreads:
    """``with blas.limit():`` runs a block with every BLAS library at ``n`` threads (threadpoolctl),
    restoring the previous counts afterwards. Used around the numpy backend and the sgemm ceiling
    only: the cython kernels call a single-threaded BLAS from their own OpenMP threads, and that
    must stay single-threaded."""

    def __init__(self, n):
        self.n = n
        try:
            from threadpoolctl import ThreadpoolController
            self.controller = ThreadpoolController()
        except Exception:
            self.controller = None

    def limit(self):
        if self.controller is None:
            return contextlib.nullcontext()
        return self.controller.limit(limits=self.n, user_api="blas")


# ============================================================================= the networks

def torch_twin(torch, state):
    """A PyTorch Net holding the weights of an nnscratch ``state_dict`` (the keys match)."""
    net = torch_reference.seed_net()
    net.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=True)
    return net


def nn_train_step(nnscratch, net, optimizer, criterion):
    def step(x, t):
        optimizer.zero_grad()
        loss = criterion(net(x), t)
        net.backward(criterion.backward(), need_input_grad=False)
        optimizer.step()
        return loss
    return step


def torch_train_step(torch, net, optimizer):
    nll = torch.nn.functional.nll_loss

    def step(x, t):
        optimizer.zero_grad()
        loss = nll(net(x), t)
        loss.backward()
        optimizer.step()
        return loss
    return step


def random_batch(seed=0):
    """A batch of 64 random "images" in [-1, 1] (what prepare_images gives) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(BATCH, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, size=BATCH).astype(np.int64)
    return x, t


# ============================================================================= timing

class Runner:
    """One implementation of one row: ``fn()`` is timed; ``context()`` (backend switch, BLAS
    threads) is entered around it untimed; ``setup()`` runs once before the warm-up; after each
    sample the runner pauses ``cooldown`` seconds (untimed) so that its thread pool has stopped
    spinning before the next implementation runs."""

    def __init__(self, fn, repeats, context=None, setup=None, warmup=None, cooldown=0.0):
        self.fn, self.repeats, self.warmup, self.cooldown = fn, repeats, warmup, cooldown
        self.context = context or contextlib.nullcontext
        self.setup = setup
        self.inner = 1
        self.samples = []
        self.cpu = []  # (cpu seconds, wall seconds) of every sample, warm-ups included

    def once(self):
        """Seconds per call of one sample (``inner`` calls), garbage collector off. Also records the
        process's CPU seconds over the same calls (``cpu``): CPU / wall shows how many cores the
        process really got (below the thread count: the machine is busy)."""
        with self.context():
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                cpu_start, start = cpu_seconds(), time.perf_counter()
                for _ in range(self.inner):
                    self.fn()
                wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
            finally:
                if gc_was_enabled:
                    gc.enable()
        self.cpu.append((cpu, wall))
        if self.cooldown:
            time.sleep(self.cooldown)
        return wall / self.inner


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rounds_for(repeats, total_rounds):
    """The rounds (of ``total_rounds``) an implementation with fewer samples takes part in: spread evenly."""
    if repeats >= total_rounds:
        return set(range(total_rounds))
    if repeats <= 1:
        return {total_rounds // 2} if repeats == 1 else set()
    return {round(k * (total_rounds - 1) / (repeats - 1)) for k in range(repeats)}


def measure(runners, warmup, adaptive, label=""):
    """Warm every runner up, then sample them round-robin; returns ``{name: [seconds, ...]}``."""
    started = time.perf_counter()
    names = list(runners)
    for name in names:
        runner = runners[name]
        if runner.setup is not None:
            with runner.context():
                runner.setup()
        last = None
        for _ in range(warmup if runner.warmup is None else runner.warmup):
            last = runner.once()
        if adaptive and last is not None and last > 0:
            runner.inner = max(1, min(50, math.ceil(SAMPLE_SECONDS / last)))
    total_rounds = max(r.repeats for r in runners.values())
    schedule = {name: rounds_for(runners[name].repeats, total_rounds) for name in names}
    for r in range(total_rounds):
        gc.collect()
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no fixed neighbour
        for name in order:
            if r in schedule[name]:
                time.sleep(GAP_SECONDS)
                runners[name].samples.append(runners[name].once())
        if label:
            print(f"\r  {label}: round {r + 1}/{total_rounds} ({time.perf_counter() - started:.0f} s)",
                  end="", file=sys.stderr, flush=True)
    if label:
        print(file=sys.stderr)
    return {name: runners[name].samples for name in names}


def sampled_cpu(runner):
    """(cpu, wall) seconds of the runner's samples (its last entries; the warm-ups come first)."""
    return runner.cpu[len(runner.cpu) - len(runner.samples):]


def median_ms(samples):
    return float(np.median(samples)) * 1e3 if samples else None


# ============================================================================= the benchmark rows

def conv_flops(n, f, c, kh, kw, oh, ow):
    return 2 * n * f * c * kh * kw * oh * ow


ROWS = [  # key, label, flops (None: not counted)
    ("conv1_forward", "conv1 forward", conv_flops(BATCH, 32, 1, 3, 3, 26, 26)),
    ("conv1_backward", "conv1 backward (dW only)", conv_flops(BATCH, 32, 1, 3, 3, 26, 26)),
    ("conv2_forward", "conv2 forward", conv_flops(BATCH, 64, 32, 3, 3, 24, 24)),
    ("conv2_backward", "conv2 backward (dX, dW)", 2 * conv_flops(BATCH, 64, 32, 3, 3, 24, 24)),
    ("maxpool_forward", "max-pool 2 forward", None),
    ("maxpool_backward", "max-pool 2 backward", None),
    ("fc1_forward", "fc1 forward", 2 * BATCH * 9216 * 128),
    ("fc1_backward", "fc1 backward (dX, dW)", 2 * 2 * BATCH * 9216 * 128),
    ("train_step", "train step (fwd+NLL+bwd+SGD)", None),
    ("inference_forward", "inference forward (eval)", None),
]


def build_cases(nnscratch, torch, args, blas):
    """``{row key: {implementation: Runner}}`` for every row, plus what the runners share."""
    from nnscratch import NLLLoss, SGD, models

    nnscratch.manual_seed(0)
    state = models.seed_net().state_dict()
    x, t = random_batch(0)
    backends = [b for b in ("cython", "numpy") if b == "numpy" or nnscratch._backend._kernels is not None]

    # the real activations of the network, as per-op inputs (computed once, shared by everyone)
    probe = models.seed_net()
    probe.load_state_dict(state)
    with nnscratch.use_backend(backends[0]):
        a1 = np.maximum(probe.conv1(x), 0)                  # conv2's input (64, 32, 26, 26)
        a2 = np.maximum(probe.conv2(a1), 0)                 # the pool's input (64, 64, 24, 24)
        a3 = np.ascontiguousarray(probe.pool(a2).reshape(BATCH, -1))  # fc1's input (64, 9216)
    rng = np.random.default_rng(1)
    grads = {  # upstream gradients, one per layer output
        "conv1": rng.standard_normal((BATCH, 32, 26, 26), dtype=np.float32),
        "conv2": rng.standard_normal((BATCH, 64, 24, 24), dtype=np.float32),
        "maxpool": rng.standard_normal((BATCH, 64, 12, 12), dtype=np.float32),
        "fc1": rng.standard_normal((BATCH, 128), dtype=np.float32),
    }
    inputs = {"conv1": x, "conv2": a1, "maxpool": a2, "fc1": a3}

    numpy_warmup = args.numpy_warmup
    op_repeats = {"cython": args.repeats, "numpy": args.numpy_repeats, "torch": args.repeats}
    step_repeats = {"cython": args.step_repeats, "numpy": args.numpy_step_repeats, "torch": args.step_repeats}
    cases = {key: {} for key, _, _ in ROWS}
    keep = {}  # objects the runners close over, kept alive

    for backend in backends:
        def context(backend=backend):
            stack = contextlib.ExitStack()
            stack.enter_context(nnscratch.use_backend(backend))
            if backend == "numpy":
                stack.enter_context(blas.limit())
            return stack

        cool = OPENBLAS_COOLDOWN if backend == "numpy" else 0.0
        net = models.seed_net()
        net.load_state_dict(state)
        net.train()
        eval_net = models.seed_net()
        eval_net.load_state_dict(state)
        eval_net.eval()
        layers = {"conv1": net.conv1, "conv2": net.conv2, "maxpool": net.pool, "fc1": net.fc1}
        for op, layer in layers.items():
            need_input_grad = op != "conv1"
            params = list(layer.parameters())

            def forward(layer=layer, xin=inputs[op]):
                return layer(xin)

            def backward(layer=layer, g=grads[op], need=need_input_grad, params=params):
                for p in params:
                    p.grad = None  # as zero_grad() before a training backward
                return layer.backward(g, need_input_grad=need)

            def setup(layer=layer, xin=inputs[op]):
                layer(xin)  # the forward whose saved input the backward uses

            warm = numpy_warmup if backend == "numpy" else None
            cases[f"{op}_forward"][backend] = Runner(forward, op_repeats[backend], context, warmup=warm, cooldown=cool)
            cases[f"{op}_backward"][backend] = Runner(backward, op_repeats[backend], context, setup, warmup=warm,
                                                      cooldown=cool)

        optimizer = SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
        step = nn_train_step(nnscratch, net, optimizer, NLLLoss())
        warm = numpy_warmup if backend == "numpy" else None
        cases["train_step"][backend] = Runner(lambda step=step: step(x, t), step_repeats[backend], context,
                                              warmup=warm, cooldown=cool)
        cases["inference_forward"][backend] = Runner(lambda n=eval_net: n(x), step_repeats[backend], context,
                                                     warmup=warm, cooldown=cool)
        keep[backend] = (net, eval_net, optimizer)

    if torch is not None:
        F = torch.nn.functional
        torch.manual_seed(0)
        tnet = torch_twin(torch, state).train()
        teval = torch_twin(torch, state).eval()
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        tin = {op: torch.from_numpy(v.copy()).requires_grad_(op != "conv1") for op, v in inputs.items()}
        tgrad = {op: torch.from_numpy(g) for op, g in grads.items()}
        tfun = {
            "conv1": lambda: tnet.conv1(tin["conv1"]),
            "conv2": lambda: tnet.conv2(tin["conv2"]),
            "maxpool": lambda: F.max_pool2d(tin["maxpool"], 2),
            "fc1": lambda: tnet.fc1(tin["fc1"]),
        }
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

            cases[f"{op}_forward"]["torch"] = Runner(fn, op_repeats["torch"])
            cases[f"{op}_backward"]["torch"] = Runner(backward, op_repeats["torch"], setup=setup)
        toptimizer = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)
        tstep = torch_train_step(torch, tnet, toptimizer)

        def tinfer():
            with torch.no_grad():
                return teval(tx)

        cases["train_step"]["torch"] = Runner(lambda: tstep(tx, tt), step_repeats["torch"])
        cases["inference_forward"]["torch"] = Runner(tinfer, step_repeats["torch"])
        keep["torch"] = (tnet, teval, toptimizer, saved)

    # the sgemm ceiling, sampled in the same rounds as conv2's forward
    m, k, n = CEILING_SHAPE
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    cases["conv2_forward"]["sgemm"] = Runner(lambda: np.matmul(a, b, out=c), args.repeats, blas.limit,
                                              cooldown=OPENBLAS_COOLDOWN)
    return cases, keep


# ============================================================================= memory (fresh subprocesses)

def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0). Returns whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(impl, threads, steps):
    """Train ``steps`` steps and print, as one JSON line, how much the peak RSS rose above the
    RSS just before training."""
    x, t = random_batch(0)
    blas = BlasThreads(threads)
    with contextlib.ExitStack() as stack:
        if impl == "torch":
            torch = import_torch()
            if torch is None:
                raise SystemExit("torch is not importable")
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            net = torch_reference.seed_net().train()
            step = torch_train_step(torch, net, torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM))
            x, t = torch.from_numpy(x), torch.from_numpy(t)
        else:
            nnscratch.set_backend(impl)
            nnscratch.set_num_threads(threads)
            if impl == "numpy":
                stack.enter_context(blas.limit())
            net = nnscratch.models.seed_net()
            step = nn_train_step(nnscratch, net, nnscratch.SGD(net.parameters(), lr=LR, momentum=MOMENTUM),
                                 nnscratch.NLLLoss())
        gc.collect()
        linux = os.path.exists("/proc/self/status")
        if linux:
            method = "VmHWM after clear_refs reset - VmRSS before" if _reset_peak() else "VmHWM - VmRSS before (no reset)"
            before = _status_kib("VmRSS")
        else:
            method = "ru_maxrss after - ru_maxrss before"
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            before = before // 1024 if sys.platform == "darwin" else before
        started = time.perf_counter()
        for _ in range(steps):
            step(x, t)
        seconds = time.perf_counter() - started
        if linux:
            peak = _status_kib("VmHWM")
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = peak // 1024 if sys.platform == "darwin" else peak
    print(json.dumps({
        "impl": impl, "steps": steps, "threads": threads, "method": method,
        "rss_before_mib": before / 1024, "peak_mib": peak / 1024,
        "increase_mib": max(peak - before, 0) / 1024, "seconds": seconds,
    }))


def measure_memory(impls, threads, steps, numpy_steps):
    results = {}
    for impl in impls:
        n = numpy_steps if impl == "numpy" else steps
        print(f"  peak memory: {impl}, {n} training steps in a fresh process", file=sys.stderr)
        command = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", impl,
                   "--threads", str(threads), "--memory-steps", str(n)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=str(REPO))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")
            results[impl] = json.loads(lines[-1])
        except (subprocess.TimeoutExpired, RuntimeError, ValueError) as error:
            print(f"bench: memory measurement of {impl} failed: {error}", file=sys.stderr)
            results[impl] = None
    return results


# ============================================================================= one real epoch

def measure_epoch(nnscratch, torch, threads, max_batches=None):
    """One MNIST epoch (batch 64, shuffled), cython and torch interleaved batch by batch; returns seconds."""
    from nnscratch import NLLLoss, SGD, models
    from nnscratch.data import DataLoader, load_mnist, prepare_images

    (images, labels), _ = load_mnist(download=False)
    loader = DataLoader(images, labels, batch_size=BATCH, shuffle=True, seed=0, transform=prepare_images)
    nnscratch.manual_seed(0)
    net = models.seed_net().train()
    steps = {"cython": nn_train_step(nnscratch, net, SGD(net.parameters(), lr=LR, momentum=MOMENTUM), NLLLoss())}
    if torch is not None:
        torch.manual_seed(0)
        tnet = torch_twin(torch, net.state_dict()).train()
        tstep = torch_train_step(torch, tnet, torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM))
        steps["torch"] = lambda xb, yb: tstep(torch.from_numpy(xb), torch.from_numpy(yb)).item()
    seconds = {name: 0.0 for name in steps}
    losses = {name: [] for name in steps}
    data_seconds, batches = 0.0, 0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    batch_iter = iter(loader)
    with nnscratch.use_backend("cython"):
        while batches < total:
            start = time.perf_counter()
            xb, yb = next(batch_iter)
            data_seconds += time.perf_counter() - start
            names = list(steps)
            for name in names[batches % len(names):] + names[:batches % len(names)]:
                start = time.perf_counter()
                loss = steps[name](xb, yb)
                seconds[name] += time.perf_counter() - start
                losses[name].append(float(loss))
            batches += 1
            if batches % 50 == 0 or batches == total:
                print(f"\r  epoch: batch {batches}/{total}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    scale = len(loader) / batches
    return {
        "batches": batches, "batches_per_epoch": len(loader), "extrapolated": batches < len(loader),
        "data_seconds": data_seconds * scale,
        "train_seconds": {name: s * scale for name, s in seconds.items()},
        "seconds": {name: (s + data_seconds) * scale for name, s in seconds.items()},
        "mean_loss_last_100": {name: float(np.mean(v[-100:])) for name, v in losses.items()},
        "note": "each epoch figure = its own training steps + the shared data pipeline (load, shuffle, prepare_images)",
    }


# ============================================================================= machine description

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def proc_stat():
    """Aggregate CPU jiffies of the whole machine from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields


def machine_busy(before, after):
    """Share of all CPUs' time spent busy (any process) and stolen by the hypervisor between two samples."""
    if not before or not after:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    if total <= 0:
        return None
    idle = delta[3] + delta[4]
    return {"busy_fraction": (total - idle) / total, "steal_fraction": delta[7] / total if len(delta) > 7 else None}


def mem_total_mib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return threadpool_info()
    except Exception as error:
        return [{"error": str(error)}]


def describe_blas(info, torch):
    """One line per BLAS, saying who uses it."""
    import numpy
    import scipy
    places = {"numpy": Path(numpy.__file__).parent, "scipy": Path(scipy.__file__).parent}
    parts = []
    for lib in info:
        if lib.get("user_api") != "blas":
            continue
        path = Path(lib.get("filepath", ""))
        owner = next((name for name, p in places.items()
                      if str(path).startswith(str(p)) or str(path).startswith(str(p) + ".libs")), "?")
        role = {"numpy": "numpy (numpy backend, sgemm ceiling)",
                "scipy": "scipy cython_blas (cython kernels, 1 thread per OpenMP thread)"}.get(owner, owner)
        parts.append(f"{role}: {lib.get('internal_api')} {lib.get('version')} {lib.get('architecture', '')} "
                     f"({lib.get('threading_layer', '?')}, {lib.get('num_threads')} threads by default)")
    if torch is not None:
        config = torch.__config__.show()
        blas = next((item.split("=", 1)[1] for item in config.replace(",", " ").split() if item.startswith("BLAS_INFO=")), "?")
        parts.append(f"torch: BLAS {blas}, mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    return parts


def kernels_identity(nnscratch):
    """Which build of the kernels was measured (they are being tuned): file, mtime, source hash."""
    kernels = nnscratch._backend._kernels
    info = {"built": kernels is not None, "openmp": bool(getattr(kernels, "OPENMP", False))}
    if kernels is not None:
        so = Path(kernels.__file__)
        info.update(path=str(so), mtime=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(so.stat().st_mtime)))
    sources = sorted((REPO / "nnscratch").glob("_kernels*.p[yx][xi]"))  # _kernels.pyx and the .pxi it includes
    if sources:
        info["pyx_sha256"] = hashlib.sha256(b"".join(f.read_bytes() for f in sources)).hexdigest()[:16]
    return info


# ============================================================================= output

def fmt(value, kind="ms"):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "pct":
        return f"{value:.0f}%"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def print_table(report):
    headers = ["", "unit", "cython", "numpy", "torch", "cy/torch", "np/cy", "GFLOP/s cy", "% sgemm"]
    lines = []
    for key, label, _ in ROWS:
        row = report["rows"][key]
        ms = row["ms"]
        lines.append([label, "ms", fmt(ms["cython"]), fmt(ms["numpy"]), fmt(ms["torch"]),
                      fmt(row["ratio_cython_over_torch"], "ratio"), fmt(row["speedup_numpy_over_cython"], "ratio"),
                      fmt(row["gflops"]["cython"]) if row["flops"] else "",
                      fmt(row["pct_of_sgemm_ceiling"], "pct") if row["flops"] else ""])
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
    widths = [max(len(headers[i]), *(len(line[i]) for line in lines if line)) for i in range(len(headers))]

    def render(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    rule = "-" * len(render(headers))
    print(render(headers))
    print(rule)
    for line in lines:
        print(rule if line is None else render(line))
    print(rule)
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
    print(f"medians of {counts['repeats']} samples per op ({counts['numpy_repeats']} numpy), {counts['step_repeats']} per "
          f"step/inference ({counts['numpy_step_repeats']} numpy), interleaved round-robin after "
          f"{counts['warmup']} warm-up call(s) ({counts['numpy_warmup']} numpy)")


# ============================================================================= main

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="samples per op for cython and torch (default 20; --quick: 2)")
    parser.add_argument("--step-repeats", type=int, default=None, metavar="N",
                        help="samples of the train step and inference (default: 3/4 of --repeats, i.e. 15)")
    parser.add_argument("--numpy-repeats", type=int, default=None, metavar="N",
                        help="samples per op for the slow numpy backend (default min(5, --repeats))")
    parser.add_argument("--numpy-step-repeats", type=int, default=None, metavar="N",
                        help="numpy backend's train step / inference samples (default min(3, --step-repeats))")
    parser.add_argument("--warmup", type=int, default=None, metavar="N", help="warm-up calls per implementation (default 2)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads for nnscratch's kernels, torch and numpy's BLAS (default: all available cores)")
    parser.add_argument("--quick", action="store_true", help="tiny repeats: a smoke run (the test uses it)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure and the machine description as JSON")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when it is installed")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-steps", type=int, default=None, metavar="N",
                        help="training steps per memory subprocess (default 5, numpy 3; --quick: 2, numpy 1)")
    parser.add_argument("--epoch", action="store_true",
                        help="also time one real MNIST epoch (cython, and torch when available); about 938 steps each")
    parser.add_argument("--epoch-batches", type=int, default=None, metavar="N",
                        help="with --epoch: stop after N batches and extrapolate to the epoch (to try the option out)")
    parser.add_argument("--import-effects", action="store_true",
                        help="also time the train step as the old import left the process (scipy's BLAS at one "
                             "thread for good, malloc tuned) against the plain import and the malloc opt-in, in "
                             "fresh processes (benchmarks/import_effects.py; about a minute, --quick: seconds)")
    parser.add_argument("--_memory-child", dest="memory_child", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    if args.repeats is None:
        args.repeats = 2 if quick else 20
    if args.step_repeats is None:
        args.step_repeats = 2 if quick else max(1, round(args.repeats * 3 / 4))
    if args.numpy_repeats is None:
        args.numpy_repeats = 1 if quick else min(5, args.repeats)
    if args.numpy_step_repeats is None:
        args.numpy_step_repeats = 1 if quick else min(3, args.step_repeats)
    if args.warmup is None:
        args.warmup = 1 if quick else 2
    if args.threads is None:
        args.threads = available_cores()
    for name in ("repeats", "step_repeats", "numpy_repeats", "numpy_step_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    args.numpy_warmup = 0 if quick else min(1, args.warmup)  # slow, and nothing in it needs warming up twice
    if args.epoch_batches is not None and args.epoch_batches < 1:
        parser.error("--epoch-batches must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    malloc.keep_freed_memory()  # a training benchmark, run as a training script would
    if args.memory_child:
        memory_child(args.memory_child, args.threads, args.memory_steps or 1)
        return 0

    loadavg_start, stat_start = loadavg(), proc_stat()
    nnscratch.set_num_threads(args.threads)
    torch = None if args.no_torch else import_torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    blas = BlasThreads(args.threads)
    have_cython = nnscratch._backend._kernels is not None
    impls = [i for i in IMPLS if (i != "cython" or have_cython) and (i != "torch" or torch is not None)]

    import scipy
    import threadpoolctl
    info = blas_info()
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "threadpoolctl": threadpoolctl.__version__, "nnscratch": nnscratch.__version__,
                "torch": torch.__version__ if torch is not None else None}
    machine = {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "available_cores": available_cores(),
               "mem_total_mib": mem_total_mib(), "platform": platform.platform(), "loadavg_start": loadavg_start}
    kernels = kernels_identity(nnscratch)
    print(f"nnscratch benchmark: the seed's Net, batch {BATCH}, float32")
    print(f"machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs ({machine['available_cores']} available), "
          f"load average {loadavg_start}")
    print(f"threads: {args.threads} (nnscratch.set_num_threads"
          + (", torch.set_num_threads" if torch is not None else "") + ", numpy BLAS for the numpy backend and the ceiling)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None)
          + ("" if torch is not None else ", torch not available"))
    print(f"backend: {nnscratch.backend()} (kernels built: {kernels['built']}, OpenMP: {kernels['openmp']}"
          + (f", built {kernels['mtime']}" if kernels.get("mtime") else "") + ")")
    for line in describe_blas(info, torch):
        print(f"BLAS: {line}")
    print(flush=True)

    print("measuring (progress on stderr) ...", file=sys.stderr)
    cases, keep = build_cases(nnscratch, torch, args, blas)
    adaptive = not args.quick
    rows = {}
    ceiling_samples = []
    for key, label, flops in ROWS:
        samples = measure(cases[key], args.warmup, adaptive, label=label)
        ceiling_samples += samples.pop("sgemm", [])
        if "sgemm" in cases[key]:
            ceiling_cpu = sampled_cpu(cases[key]["sgemm"])
        ms = {impl: median_ms(samples.get(impl, [])) for impl in IMPLS}
        rows[key] = {
            "label": label, "unit": "ms", "flops": flops, "ms": ms,
            "min_ms": {impl: (min(samples[impl]) * 1e3 if samples.get(impl) else None) for impl in IMPLS},
            "samples_ms": {impl: [s * 1e3 for s in samples.get(impl, [])] for impl in IMPLS},
            "calls_per_sample": {impl: cases[key][impl].inner for impl in IMPLS if impl in cases[key]},
            "cpu_wall_s": {impl: [sum(c for c, _ in sampled_cpu(cases[key][impl])),
                                  sum(w for _, w in sampled_cpu(cases[key][impl]))]
                           for impl in IMPLS if impl in cases[key]},
            "ratio_cython_over_torch": ratio(ms["cython"], ms["torch"]),
            "speedup_numpy_over_cython": ratio(ms["numpy"], ms["cython"]),
            "gflops": {impl: (flops / (ms[impl] * 1e-3) / 1e9 if flops and ms[impl] else None) for impl in IMPLS},
        }
    del keep, cases
    cores_used = {}
    for impl in IMPLS:
        pairs = [row["cpu_wall_s"][impl] for row in rows.values() if impl in row["cpu_wall_s"]]
        wall = sum(w for _, w in pairs)
        cores_used[impl] = sum(c for c, _ in pairs) / wall if wall > 0 else None
    wall = sum(w for _, w in ceiling_cpu)
    cores_used["sgemm"] = sum(c for c, _ in ceiling_cpu) / wall if wall > 0 else None
    m, k, n = CEILING_SHAPE
    ceiling_ms = median_ms(ceiling_samples)
    ceiling_gflops = 2 * m * k * n / (ceiling_ms * 1e-3) / 1e9
    for row in rows.values():
        row["pct_of_sgemm_ceiling"] = (100 * row["gflops"]["cython"] / ceiling_gflops
                                       if row["flops"] and row["gflops"]["cython"] else None)
    sgemm = {"shape_mkn": list(CEILING_SHAPE), "dtype": "float32", "threads": args.threads, "ms": ceiling_ms,
             "gflops": ceiling_gflops, "samples_ms": [s * 1e3 for s in ceiling_samples],
             "conv2_forward_pct": rows["conv2_forward"]["pct_of_sgemm_ceiling"]}
    step_ms = rows["train_step"]["ms"]
    epoch_estimate = {impl: (step_ms[impl] * 1e-3 * EPOCH_STEPS if step_ms[impl] else None) for impl in IMPLS}
    epoch_estimate["steps"] = EPOCH_STEPS

    memory = None
    if not args.no_memory:
        steps = args.memory_steps or (2 if args.quick else 5)
        numpy_steps = args.memory_steps or (1 if args.quick else 3)
        details = measure_memory(impls, args.threads, steps, numpy_steps)
        mib = {impl: (details[impl]["increase_mib"] if details.get(impl) else None) for impl in IMPLS}
        memory = {"steps": steps, "numpy_steps": numpy_steps, "mib": mib,
                  "ratio_cython_over_torch": ratio(mib["cython"], mib["torch"]), "details": details,
                  "method": next((d["method"] for d in details.values() if d), None)}

    epoch_measured = None
    if args.epoch:
        if have_cython:
            epoch_measured = measure_epoch(nnscratch, torch, args.threads, args.epoch_batches)
        else:
            print("bench: --epoch needs the cython backend; skipped", file=sys.stderr)

    import_effects = None
    if args.import_effects:
        if have_cython:
            import import_effects as effects  # benchmarks/, on sys.path when this file runs as a script
            import_effects = effects.measure(args.threads, rounds=1 if args.quick else 4, steps=3 if args.quick else 30,
                                             warmup=1 if args.quick else 5)
        else:
            print("bench: --import-effects needs the cython backend; skipped", file=sys.stderr)

    machine["loadavg_end"] = loadavg()
    machine["during_run"] = machine_busy(stat_start, proc_stat())
    report = {
        "schema": 1,
        "command": [sys.executable] + sys.argv,
        "settings": {"batch": BATCH, "dtype": "float32", "repeats": args.repeats, "step_repeats": args.step_repeats,
                     "numpy_repeats": args.numpy_repeats, "numpy_step_repeats": args.numpy_step_repeats,
                     "warmup": args.warmup, "numpy_warmup": args.numpy_warmup, "quick": args.quick, "threads": args.threads,
                     "interleaved": True,
                     "sgd": {"lr": LR, "momentum": MOMENTUM}},
        "machine": machine, "versions": versions, "blas": info,
        "torch_parallel_info": torch.__config__.parallel_info() if torch is not None else None,
        "threads": args.threads, "backend": nnscratch.backend(), "kernels": kernels,
        "implementations": impls,
        "conventions": {
            "conv_forward_flops": "2*N*F*C*KH*KW*OH*OW",
            "conv_backward_flops": "2x forward when the input gradient is computed (conv2); 1x for conv1 (weight gradient only)",
            "fc_flops": "forward 2*N*in*out; backward 2x forward (input and weight gradients)",
            "ratio_cython_over_torch": "cython ms / torch ms (>1: cython slower)",
            "speedup_numpy_over_cython": "numpy ms / cython ms",
            "per_op": "layer forward / backward as the network calls them, bias included; torch via F.* with autograd on "
                      "and torch.autograd.grad for the backward",
            "train_step": ("zero_grad + forward (train mode, dropout) + NLLLoss + backward (no input gradient)"
                           " + SGD momentum step"),
            "inference_forward": "forward in eval mode (torch under no_grad)",
            "cores_used": "process CPU seconds / wall seconds over the timed samples of each implementation "
                          "(all rows); below the thread count when the machine is busy",
            "memory": "peak RSS during the training steps minus RSS before them, each implementation in a fresh subprocess",
        },
        "rows": rows,
        "cores_used": cores_used,
        "sgemm_ceiling": sgemm,
        "epoch_estimate_s": epoch_estimate,
        "epoch_measured": epoch_measured,
        "memory": memory,
        "import_effects": import_effects,
    }
    print_table(report)
    if import_effects is not None:
        import import_effects as effects
        print("train step, cython, by what the import leaves in the process (fresh processes, alternating):")
        for line in effects.describe(import_effects):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

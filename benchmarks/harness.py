"""The benchmarks' timing harness: interleaved samples, medians, the machine's description, tables, JSON.

Design, in three lines:

* a :class:`Runner` is one implementation of one row (a callable, the context it runs in, its sample count);
* :func:`measure` warms every runner of a row up, then samples them round-robin in this one process
  (the order rotating every round), so machine noise hits them alike; :func:`summarize` keeps medians;
* the rest describes the machine (CPU, load, BLAS, versions) and writes the figures (text tables, JSON).

Why not pyperf: it runs each benchmark in its own worker processes, one after the other, and
calibrates loops per process; the rows here compare implementations *side by side in one process*
(same data, same heap, same thread pools), sample by sample, which is the point of the design.
Nothing here knows about nnscratch; :mod:`bench` and :mod:`shapes` build the runners.
"""
import contextlib
import gc
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAMPLE_SECONDS = 0.02  # a sample of a fast call repeats it until about this long
GAP_SECONDS = 0.005  # pause between two measurements (lets spinning thread pools go idle)
# OpenBLAS's idle worker threads busy-wait for about 0.1 s after a call (measured here: ~80 ms of
# CPU during a 300 ms sleep after numpy's sgemm), stealing a core from whatever is timed next; so
# samples that used numpy's multi-threaded BLAS (numpy backend, sgemm ceiling) are followed by a
# longer pause.
OPENBLAS_COOLDOWN = 0.15


def import_torch():
    """``torch``, or ``None`` when it is not installed or does not import (its column shows "-")."""
    try:
        import torch
        return torch
    except Exception:
        return None


class BlasThreads:
    """``with blas.limit():`` runs a block with every BLAS library at ``n`` threads (threadpoolctl),
    restoring the previous counts afterwards. Used around numpy's own BLAS (the numpy backend, the
    sgemm ceiling) only: the cython kernels hold the BLAS they call at one thread themselves."""

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
        self.faults = []  # minor page faults per call of every sample, warm-ups included

    def once(self):
        """Seconds per call of one sample (``inner`` calls), garbage collector off. Also records the
        process's CPU seconds over the same calls (CPU / wall shows how many cores the process
        really got: below the thread count, the machine is busy) and its minor page faults per call
        (memory the kernel had to map and zero: see :func:`grow_heap`)."""
        with self.context():
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                faults_start, cpu_start, start = minor_faults(), cpu_seconds(), time.perf_counter()
                for _ in range(self.inner):
                    self.fn()
                wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
                faults = minor_faults() - faults_start
            finally:
                if gc_was_enabled:
                    gc.enable()
        self.cpu.append((cpu, wall))
        self.faults.append(faults / self.inner)
        if self.cooldown:
            time.sleep(self.cooldown)
        return wall / self.inner

    def sampled_cpu(self):
        """(cpu, wall) seconds of the timed samples (the last entries; the warm-ups come first)."""
        return self.cpu[len(self.cpu) - len(self.samples):]

    def sampled_faults(self):
        """Minor page faults per call of the timed samples."""
        return self.faults[len(self.faults) - len(self.samples):]


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def grow_heap(mib, chunk_mib=16):
    """Grow the process's malloc heap by ``mib`` MiB of touched, then freed, memory, so that later
    large buffers come from it without page faults. Needs ``nnscratch.malloc.keep_freed_memory()``
    first (so that ``chunk_mib`` chunks come from the heap and the freed heap is kept).

    Why: glibc serves a buffer of 32 MiB or more (its largest mmap threshold) from the heap when
    the heap has that much free, else from a fresh ``mmap`` whose every 4 KiB page faults on first
    touch. PyTorch's 7×7 stem forward allocates two 51 MB buffers: with fresh mappings that is
    25,090 page faults and ~27 ms a call, with a grown heap none (measured: 42 -> 14.7 ms). Whether
    the heap happens to have grown that large depends on what the process ran before (the real
    epoch does it), so a benchmark grows it on purpose: the figures then time the convolutions,
    not the allocator."""
    chunks = [np.ones(chunk_mib * 2**20 // 4, dtype=np.float32) for _ in range(mib // chunk_mib)]
    del chunks


def rounds_for(repeats, total_rounds):
    """The rounds (of ``total_rounds``) an implementation with fewer samples takes part in: spread evenly."""
    if repeats >= total_rounds:
        return set(range(total_rounds))
    if repeats <= 1:
        return {total_rounds // 2} if repeats == 1 else set()
    return {round(k * (total_rounds - 1) / (repeats - 1)) for k in range(repeats)}


def measure(runners, warmup, adaptive, label=""):
    """Warm every runner up (``warmup`` calls unless it has its own count; with ``adaptive``, a fast
    call is repeated within a sample to last about SAMPLE_SECONDS), then sample them round-robin;
    returns ``{name: [seconds per call, ...]}``. Progress goes to stderr when ``label`` is given."""
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


def sgemm_runner(shape_mkn, repeats, blas):
    """A runner of numpy's float32 matmul ``(m×k) @ (k×n)`` under ``blas.limit()``: a ceiling for GEMM-bound rows."""
    m, k, n = shape_mkn
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    return Runner(lambda: np.matmul(a, b, out=c), repeats, blas.limit, cooldown=OPENBLAS_COOLDOWN)


def sgemm_figures(runner, shape_mkn, threads):
    """The ceiling's median time and GFLOP/s (2·m·k·n / time)."""
    m, k, n = shape_mkn
    ms = median_ms(runner.samples)
    return {"shape_mkn": list(shape_mkn), "dtype": "float32", "threads": threads, "ms": ms,
            "gflops": 2 * m * k * n / (ms * 1e-3) / 1e9, "samples_ms": [s * 1e3 for s in runner.samples]}


def median_ms(samples):
    return float(np.median(samples)) * 1e3 if samples else None


def summarize(runners, names):
    """Per implementation of ``names``: median, minimum and every sample in ms, calls per sample,
    (cpu, wall) seconds over the samples and the median page faults per call; ``None`` / empty for
    an implementation that did not run."""
    def field(name, value):
        return value(runners[name]) if name in runners and runners[name].samples else None

    return {
        "ms": {n: field(n, lambda r: median_ms(r.samples)) for n in names},
        "min_ms": {n: field(n, lambda r: min(r.samples) * 1e3) for n in names},
        "samples_ms": {n: [s * 1e3 for s in runners[n].samples] if n in runners else [] for n in names},
        "calls_per_sample": {n: runners[n].inner for n in names if n in runners},
        "cpu_wall_s": {n: [sum(c for c, _ in runners[n].sampled_cpu()), sum(w for _, w in runners[n].sampled_cpu())]
                       for n in names if n in runners},
        "faults_per_call": {n: field(n, lambda r: float(np.median(r.sampled_faults()))) for n in names},
    }


def cores_used(pairs):
    """CPU seconds / wall seconds summed over ``[cpu, wall]`` pairs (None without wall time)."""
    wall = sum(w for _, w in pairs)
    return sum(c for c, _ in pairs) / wall if wall > 0 else None


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


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
    except AttributeError:  # not on Linux
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
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


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


def machine():
    return {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "available_cores": available_cores(),
            "mem_total_mib": mem_total_mib(), "platform": platform.platform(), "loadavg_start": loadavg()}


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return threadpool_info()
    except Exception as error:
        return [{"error": str(error)}]


def describe_blas(info, torch):
    """One line per BLAS, saying who uses it."""
    import scipy
    places = {"numpy": Path(np.__file__).parent, "scipy": Path(scipy.__file__).parent}
    parts = []
    for lib in info:
        if lib.get("user_api") != "blas":
            continue
        path = str(lib.get("filepath", ""))
        owner = next((name for name, p in places.items() if path.startswith(str(p))), "?")  # also <package>.libs
        role = {"numpy": "numpy (numpy backend, sgemm ceiling)",
                "scipy": "scipy cython_blas (cython kernels, 1 thread per OpenMP thread)"}.get(owner, owner)
        parts.append(f"{role}: {lib.get('internal_api')} {lib.get('version')} {lib.get('architecture', '')} "
                     f"({lib.get('threading_layer', '?')}, {lib.get('num_threads')} threads by default)")
    if torch is not None:
        config = torch.__config__.show()
        blas = next((item.split("=", 1)[1] for item in config.replace(",", " ").split() if item.startswith("BLAS_INFO=")), "?")
        parts.append(f"torch: BLAS {blas}, mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}")
    return parts


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


def print_table(headers, lines):
    """A text table: the first column left-aligned, the others right-aligned; ``None`` in ``lines`` is a rule."""
    widths = [max(len(headers[i]), *(len(line[i]) for line in lines if line)) for i in range(len(headers))]

    def render(cells):
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))

    rule = "-" * len(render(headers))
    print(render(headers))
    print(rule)
    for line in lines:
        print(rule if line is None else render(line))
    print(rule)


def write_json(path, report):
    """Write ``report`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

"""What ``import nnscratch`` used to change in the process, and what it costs not to (issue 10, item 10).

Until then, the import set scipy's BLAS to one thread for the whole process and tuned glibc's malloc
(``nnscratch/malloc.py``). Now the import changes nothing: scipy's BLAS is held at one thread only
while a compiled kernel that calls it runs (``nnscratch.backends.kernel_blas``), and the malloc
tuning is an opt-in, ``nnscratch.malloc.keep_freed_memory()``. This times the seed Net's training
step (batch 64, float32, cython backend) three ways, each in a fresh process, the processes of the
three alternating round after round so that machine noise hits them alike:

* ``import-0.1.0``: the old import: scipy's BLAS at one thread process-wide, malloc tuned, no
  per-call limit;
* ``plain-import``: the library's default now: the per-call limit, malloc untouched;
* ``keep-freed-memory``: the per-call limit and the opt-in (what the examples and bench.py do).

It also times the per-call limit alone (entering and leaving ``kernel_blas`` with scipy's BLAS at
more than one thread, so that it really switches) and counts its calls per training step.

Run through ``python benchmarks/bench.py --import-effects`` (the figures go into its report), or
``python benchmarks/import_effects.py`` for these figures alone. Nothing is asserted. This rebuilds
what the import used to do, which only private names can: they are reached through
``benchmarks/internals.py``, the benchmarks' one access point to them.
"""
import argparse
import contextlib
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import harness
import internals
import nets

CONFIGS = ("import-0.1.0", "plain-import", "keep-freed-memory")


def child(config, threads, steps, warmup):
    """Train ``warmup + steps`` steps under ``config``; print the timed steps as one JSON line."""
    import nnscratch
    from nnscratch import malloc, models

    if config in ("import-0.1.0", "keep-freed-memory"):
        malloc.keep_freed_memory()
    with contextlib.ExitStack() as stack:
        if config == "import-0.1.0":  # what the import did: one BLAS thread for good, and no per-call limit
            for lib in internals.kernel_blas_libraries():
                lib.set_num_threads(nnscratch.backends.KERNEL_BLAS_THREADS)
            stack.enter_context(internals.replace_kernel_blas(contextlib.nullcontext))
        stack.enter_context(nnscratch.use_backend("cython"))
        nnscratch.set_num_threads(threads)
        nnscratch.manual_seed(0)
        step = nets.seed_step(nnscratch, models.seed_net().train())
        x, t = nets.random_batch(0)
        for _ in range(warmup):
            step(x, t)
        gc.disable()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            step(x, t)
            seconds.append(time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"config": config, "step_ms": [s * 1e3 for s in seconds], "faults_per_step": faults / steps,
                      "malloc_tuned": malloc.applied}))


def kernel_blas_overhead(calls=20000):
    """Microseconds per ``with kernel_blas():`` block, and such blocks per training step (this process)."""
    import nnscratch
    from nnscratch import models

    with nnscratch.use_backend("cython"):
        with nnscratch.backends.kernel_blas():  # finds the libraries once
            pass
        threads = {lib.filepath: lib.num_threads for lib in internals.kernel_blas_libraries()}
        start = time.perf_counter()
        for _ in range(calls):
            with nnscratch.backends.kernel_blas():
                pass
        per_call_us = (time.perf_counter() - start) / calls * 1e6

        counted = []
        step = nets.seed_step(nnscratch, models.seed_net().train())
        x, t = nets.random_batch(0)
        with internals.replace_kernel_blas(lambda: counted.append(1) or original()) as original:
            step(x, t)
    return {"per_call_us": per_call_us, "calls_per_step": len(counted), "per_step_us": per_call_us * len(counted),
            "scipy_blas_threads_outside_kernels": threads}


def measure(threads, rounds=4, steps=30, warmup=5, log=sys.stderr):
    """The three configurations, ``rounds`` fresh processes each (alternating), and the ratios to the old import."""
    samples = {config: [] for config in CONFIGS}
    faults = {config: [] for config in CONFIGS}
    here = Path(__file__).resolve()
    started = time.perf_counter()
    for r in range(rounds):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
        for config in order:
            command = [sys.executable, str(here), "--child", config, "--threads", str(threads),
                       "--steps", str(steps), "--warmup", str(warmup)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=str(here.parent.parent))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"import_effects child {config} failed (exit {done.returncode}): {done.stderr[-800:]}")
            result = json.loads(lines[-1])
            samples[config] += result["step_ms"]
            faults[config].append(result["faults_per_step"])
            print(f"\r  import effects: round {r + 1}/{rounds}, {config} ({time.perf_counter() - started:.0f} s)   ",
                  end="", file=log, flush=True)
    print(file=log)
    medians = {config: float(np.median(samples[config])) for config in CONFIGS}
    base = medians["import-0.1.0"]
    return {
        "configs": {config: {"median_step_ms": medians[config], "faults_per_step": float(np.mean(faults[config])),
                             "samples_ms": samples[config]} for config in CONFIGS},
        "ratio_to_import_0_1_0": {config: medians[config] / base for config in CONFIGS},
        "kernel_blas": kernel_blas_overhead(),
        "settings": {"threads": threads, "rounds": rounds, "steps_per_process": steps, "warmup": warmup},
        "note": "median train step of the seed Net (batch 64, float32, cython), each configuration in fresh "
                "processes alternating; ratio > 1: slower than the old import",
    }


def describe(result):
    """The figures as printed lines."""
    lines = []
    for config in CONFIGS:
        figures = result["configs"][config]
        lines.append(f"  {config:18s} median step {figures['median_step_ms']:7.2f} ms  "
                     f"(x{result['ratio_to_import_0_1_0'][config]:.3f} of import-0.1.0), "
                     f"{figures['faults_per_step']:.0f} page faults per step")
    blas = result["kernel_blas"]
    lines.append(f"  kernel_blas limit: {blas['per_call_us']:.2f} us per call, {blas['calls_per_step']} calls per step "
                 f"= {blas['per_step_us']:.1f} us per step")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or harness.available_cores()
    if args.child:
        child(args.child, threads, args.steps, args.warmup)
        return 0
    for line in describe(measure(threads, args.rounds, args.steps, args.warmup)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory of training: each implementation trains a few steps in a fresh process (this file run
as a script); the figure is the peak resident set size during the steps minus the resident set size
just before them. Linux: VmHWM, reset just before training through /proc/self/clear_refs; elsewhere
ru_maxrss (not reset). Called by ``bench.py``; ``python benchmarks/memory.py --impl cython`` prints one
process's figures as a JSON line.
"""
import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import harness
import nets

IMPLS = ("cython", "numpy", "torch")


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


def _maxrss_kib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def child(impl, threads, steps):
    """Train ``steps`` steps; print how much the peak RSS rose above the RSS before training (one JSON line)."""
    import nnscratch
    from nnscratch import malloc

    malloc.keep_freed_memory()  # as bench.py's own process
    x, t = nets.random_batch(0)
    with contextlib.ExitStack() as stack:
        if impl == "torch":
            torch = harness.import_torch()
            if torch is None:
                raise SystemExit("torch is not importable")
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            net = nets.torch_reference().seed_net().train()
            step = nets.torch_train_step(torch, net, torch.optim.SGD(net.parameters(), lr=nets.LR, momentum=nets.MOMENTUM))
            x, t = torch.from_numpy(x), torch.from_numpy(t)
        else:
            stack.enter_context(nnscratch.use_backend(impl))
            nnscratch.set_num_threads(threads)
            if impl == "numpy":
                stack.enter_context(harness.BlasThreads(threads).limit())
            step = nets.seed_step(nnscratch, nnscratch.models.seed_net())
        gc.collect()
        linux = os.path.exists("/proc/self/status")
        if linux:
            method = "VmHWM after clear_refs reset - VmRSS before" if _reset_peak() else "VmHWM - VmRSS before (no reset)"
            before = _status_kib("VmRSS")
        else:
            method = "ru_maxrss after - ru_maxrss before"
            before = _maxrss_kib()
        started = time.perf_counter()
        for _ in range(steps):
            step(x, t)
        seconds = time.perf_counter() - started
        peak = _status_kib("VmHWM") if linux else _maxrss_kib()
    print(json.dumps({
        "impl": impl, "steps": steps, "threads": threads, "method": method,
        "rss_before_mib": before / 1024, "peak_mib": peak / 1024,
        "increase_mib": max(peak - before, 0) / 1024, "seconds": seconds,
    }))


def measure(impls, threads, steps, numpy_steps):
    """``{impl: figures or None}``, each implementation in a fresh process (``numpy_steps`` steps for numpy)."""
    results = {}
    for impl in impls:
        n = numpy_steps if impl == "numpy" else steps
        print(f"  peak memory: {impl}, {n} training steps in a fresh process", file=sys.stderr)
        command = [sys.executable, str(Path(__file__).resolve()), "--impl", impl, "--threads", str(threads), "--steps", str(n)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=str(nets.REPO))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                raise RuntimeError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")
            results[impl] = json.loads(lines[-1])
        except (subprocess.TimeoutExpired, RuntimeError, ValueError) as error:
            print(f"bench: memory measurement of {impl} failed: {error}", file=sys.stderr)
            results[impl] = None
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=IMPLS, required=True)
    parser.add_argument("--threads", type=int, default=harness.available_cores())
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    child(args.impl, args.threads, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One real MNIST epoch (``bench.py --epoch``): batch 64, shuffled, ``prepare_images``, the cython
backend and PyTorch (when available) trained side by side, interleaved batch by batch.

Besides each library's total, the report keeps what tells where an epoch's time goes: every step's
time (the median step against the mean shows whether a gap is in the typical step or in slow
outliers: the fixed-batch rows of the bench are medians, an epoch is a sum), the process's CPU
seconds during each library's steps (CPU / wall: the cores it really got), the garbage collector's
time during each library's steps, and the data pipeline's time (batch indexing, and the transform).
"""
import gc
import sys
import time

import numpy as np

import harness
import nets


def measure(nnscratch, torch, max_batches=None):
    """Seconds of one epoch per implementation (its steps + the shared data pipeline); with
    ``max_batches``, the first batches only, extrapolated to the epoch."""
    from nnscratch.data import DataLoader, load_mnist, prepare_images

    (images, labels), _ = load_mnist(download=False)
    loader = DataLoader(images, labels, batch_size=nets.BATCH, shuffle=True, seed=0, transform=prepare_images)
    nnscratch.manual_seed(0)
    net = nnscratch.models.seed_net().train()
    steps = {"cython": nets.seed_step(nnscratch, net)}
    if torch is not None:
        torch.manual_seed(0)
        tnet = nets.torch_twin(torch, net.state_dict()).train()
        tstep = nets.torch_train_step(torch, tnet, torch.optim.SGD(tnet.parameters(), lr=nets.LR, momentum=nets.MOMENTUM))
        steps["torch"] = lambda xb, yb: tstep(torch.from_numpy(xb), torch.from_numpy(yb)).item()
    times = {name: [] for name in steps}
    cpu = {name: 0.0 for name in steps}
    losses = {name: [] for name in steps}
    collector = _CollectorTime(list(steps))
    data_seconds, batches = 0.0, 0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    batch_iter = iter(loader)
    names = list(steps)
    gc.callbacks.append(collector)
    try:
        with nnscratch.use_backend("cython"):
            while batches < total:
                start = time.perf_counter()
                xb, yb = next(batch_iter)
                data_seconds += time.perf_counter() - start
                for name in names[batches % len(names):] + names[:batches % len(names)]:
                    collector.current = name
                    cpu_start, start = harness.cpu_seconds(), time.perf_counter()
                    loss = steps[name](xb, yb)
                    times[name].append(time.perf_counter() - start)
                    cpu[name] += harness.cpu_seconds() - cpu_start
                    collector.current = None
                    losses[name].append(float(loss))
                batches += 1
                if batches % 50 == 0 or batches == total:
                    print(f"\r  epoch: batch {batches}/{total}", end="", file=sys.stderr, flush=True)
    finally:
        gc.callbacks.remove(collector)
    print(file=sys.stderr)
    scale = len(loader) / batches
    seconds = {name: sum(t) for name, t in times.items()}
    return {
        "batches": batches, "batches_per_epoch": len(loader), "extrapolated": batches < len(loader),
        "data_seconds": data_seconds * scale,
        "transform_seconds": _transform_seconds(loader, batches) * scale,
        "train_seconds": {name: s * scale for name, s in seconds.items()},
        "seconds": {name: (s + data_seconds) * scale for name, s in seconds.items()},
        "step_ms": {name: {"median": float(np.median(t)) * 1e3, "mean": float(np.mean(t)) * 1e3,
                           "p90": float(np.percentile(t, 90)) * 1e3, "max": float(np.max(t)) * 1e3} for name, t in times.items()},
        "cores_used": {name: cpu[name] / seconds[name] for name in steps},
        "gc_seconds": {name: collector.seconds[name] * scale for name in steps},
        "gc_collections": {name: collector.count[name] for name in steps},
        "mean_loss_last_100": {name: float(np.mean(v[-100:])) for name, v in losses.items()},
        "note": "each epoch figure = its own training steps + the shared data pipeline (load, shuffle, prepare_images)",
    }


class _CollectorTime:
    """A ``gc.callbacks`` entry: seconds and collections of the garbage collector while ``current`` runs."""

    def __init__(self, names):
        self.current, self.started = None, 0.0
        self.seconds, self.count = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)

    def __call__(self, phase, info):
        if phase == "start":
            self.started = time.perf_counter()
        elif self.current is not None:
            self.seconds[self.current] += time.perf_counter() - self.started
            self.count[self.current] += 1


def _transform_seconds(loader, batches):
    """Seconds of the loader's transform alone over ``batches`` batches of the same size (untimed indexing)."""
    order = np.random.default_rng(0).permutation(len(loader.labels))
    seconds = 0.0
    for b in range(batches):
        raw = loader.images[order[b * loader.batch_size:(b + 1) * loader.batch_size]]
        start = time.perf_counter()
        loader.transform(raw)
        seconds += time.perf_counter() - start
    return seconds


def describe(result):
    """The epoch's diagnostics as printed lines."""
    lines = [f"  data pipeline {result['data_seconds']:.2f} s per epoch (of which the transform "
             f"{result['transform_seconds']:.2f} s), added to each library's steps"]
    for name, step in result["step_ms"].items():
        lines.append(f"  {name}: step median {step['median']:.1f} ms, mean {step['mean']:.1f}, p90 {step['p90']:.1f}, "
                     f"max {step['max']:.0f}; {result['cores_used'][name]:.2f} cores used; garbage collector "
                     f"{result['gc_seconds'][name]:.2f} s ({result['gc_collections'][name]} collections)")
    return lines

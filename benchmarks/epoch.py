"""One real MNIST epoch (``bench.py --epoch``): batch 64, shuffled, ``prepare_images``, the cython
backend and PyTorch (when available) trained side by side, interleaved batch by batch."""
import sys
import time

import numpy as np

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
    seconds = {name: 0.0 for name in steps}
    losses = {name: [] for name in steps}
    data_seconds, batches = 0.0, 0
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    batch_iter = iter(loader)
    names = list(steps)
    with nnscratch.use_backend("cython"):
        while batches < total:
            start = time.perf_counter()
            xb, yb = next(batch_iter)
            data_seconds += time.perf_counter() - start
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

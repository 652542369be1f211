"""Batching: :class:`DataLoader` yields ``(x_batch, y_batch)`` mini-batches with a reproducible
per-epoch shuffle."""
import math

import numpy as np


def _check_images_labels(images, labels):
    """Return `images` and `labels` as arrays, checking that they pair up."""
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-dimensional, got shape {labels.shape}")
    if images.ndim == 0 or len(images) != len(labels):
        raise ValueError(
            f"images and labels must have the same length, got shapes "
            f"{images.shape} and {labels.shape}"
        )
    return images, labels


class DataLoader:
    """
    Iterate over ``(x_batch, y_batch)`` mini-batches of a dataset.

    Each ``iter()`` runs one epoch and advances the epoch counter. With
    `shuffle`, the order of epoch `e` is a permutation drawn from a NumPy
    Generator seeded with ``(seed, e)``, so it depends only on `seed` and
    `e`: :meth:`set_epoch` makes resumed training repeat the same order.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        Integer class labels; yielded as int64.
    batch_size : int
        Samples per batch, at least 1.
    shuffle : bool
        Whether to visit samples in a new random order each epoch.
        Default is False (dataset order).
    seed : int
        Non-negative seed of the shuffle. Default is 0.
    drop_last : bool
        Whether to drop the final batch if it is smaller than
        `batch_size`. Default is False.
    transform : callable or None
        Applied to each image batch, e.g. :func:`prepare_images`.
        Default is None (batches are slices of `images`).
    """

    def __init__(self, images, labels, batch_size, shuffle=False, seed=0,
                 drop_last=False, transform=None):
        images, labels = _check_images_labels(images, labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next ``iter()`` run epoch `epoch` (counting from 0)."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        order = None
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self.labels))
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order):
        for b in range(len(self)):
            start = b * self.batch_size
            index = slice(start, start + self.batch_size)
            if order is not None:
                index = order[index]
            x = self.images[index]
            if self.transform is not None:
                x = self.transform(x)
            yield x, self.labels[index]

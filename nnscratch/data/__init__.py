"""Data pipeline: IDX reading, MNIST loading, transforms, batching and subsets (one module each).

The pieces, in the order a training script uses them:

* :func:`read_idx` (:mod:`~nnscratch.data.idx`) parses one IDX file (the format
  MNIST is distributed in), gzip-compressed or raw, and validates it strictly:
  a malformed or lying header raises :class:`ValueError` quickly instead of
  hanging or allocating memory it claims to need.
* :func:`load_mnist` finds the four MNIST files (an explicit directory,
  ``$NNSCRATCH_DATA``, the repository's ``data/mnist/``, the user cache),
  downloads whatever is missing into the cache if allowed, and verifies the
  SHA-256 of every decompressed file on each load.
* :func:`to_float`, :class:`Normalize` and :func:`prepare_images` turn uint8
  images of shape ``(N, H, W)`` into float32 ``(N, 1, H, W)`` network inputs.
* :class:`DataLoader` yields ``(x_batch, y_batch)`` mini-batches with a
  reproducible per-epoch shuffle.
* :func:`subset_by_labels`, :func:`per_class_subset` and
  :func:`train_val_split` carve smaller datasets out of a bigger one.
"""
from .idx import GZIP_MAGIC, IDX_DTYPES, MAX_IDX_BYTES, read_idx
from .loader import DataLoader
from .mnist import (
    DOWNLOAD_TIMEOUT, MNIST_FILES, MNIST_MIRRORS, MNIST_SHAPES, REPO_MNIST_DIR, MNISTNotFoundError, load_mnist,
    mnist_cache_dir, mnist_search_dirs,
)
from .subsets import per_class_subset, subset_by_labels, train_val_split
from .transforms import Normalize, prepare_images, to_float

__all__ = [
    "DOWNLOAD_TIMEOUT", "GZIP_MAGIC", "IDX_DTYPES", "MAX_IDX_BYTES", "MNIST_FILES", "MNIST_MIRRORS", "MNIST_SHAPES",
    "REPO_MNIST_DIR", "DataLoader", "MNISTNotFoundError", "Normalize", "load_mnist", "mnist_cache_dir",
    "mnist_search_dirs", "per_class_subset", "prepare_images", "read_idx", "subset_by_labels", "to_float",
    "train_val_split",
]

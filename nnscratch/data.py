"""Data pipeline: IDX reading, MNIST loading, transforms, batching and subsets.

The pieces, in the order a training script uses them:

* :func:`read_idx` (from :mod:`nnscratch.idx`) parses one IDX file (the format
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

import math
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .idx import GZIP_MAGIC, IDX_DTYPES, MAX_IDX_BYTES, read_idx  # noqa: F401  (re-exported)

_CHUNK_SIZE = 1 << 20

# File name (without ``.gz``) -> SHA-256 of the decompressed file.
MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# File name -> (dtype, shape) its header must declare, checked before the payload is read.
MNIST_SHAPES = {
    "train-images-idx3-ubyte": (np.uint8, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (np.uint8, (60000,)),
    "t10k-images-idx3-ubyte": (np.uint8, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (np.uint8, (10000,)),
}

# Base URLs serving ``<name>.gz`` for every name in MNIST_FILES, tried in order.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

DOWNLOAD_TIMEOUT = 30.0  # seconds, per connection attempt / blocking read

# The repository's copy of MNIST; present for in-repo and editable installs.
REPO_MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are in none of the searched places and could not be
    downloaded."""


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------


def mnist_cache_dir():
    """
    The per-user download cache for MNIST.

    Returns
    -------
    directory : :class:`pathlib.Path`
        ``$XDG_CACHE_HOME/nnscratch/mnist`` if ``XDG_CACHE_HOME`` is set,
        else ``~/.cache/nnscratch/mnist``. It may not exist yet.
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nnscratch" / "mnist"


def mnist_search_dirs(root=None):
    """
    The directories :func:`load_mnist` looks in, in order.

    Parameters
    ----------
    root : str, :class:`os.PathLike` or None
        An explicit directory to look in first. Default is None.

    Returns
    -------
    directories : list of :class:`pathlib.Path`
        `root` (if given), ``$NNSCRATCH_DATA`` (if set; the directory that
        directly contains the files), the repository's ``data/mnist/``,
        and :func:`mnist_cache_dir`, without duplicates.
    """
    candidates = []
    if root is not None:
        candidates.append(Path(root))
    if os.environ.get("NNSCRATCH_DATA"):
        candidates.append(Path(os.environ["NNSCRATCH_DATA"]))
    candidates += [REPO_MNIST_DIR, mnist_cache_dir()]

    directories = []
    for directory in candidates:
        directory = directory.expanduser().resolve()
        if directory not in directories:
            directories.append(directory)
    return directories


def _find_mnist_file(directory, name):
    """Path of `name` (``name.gz`` preferred, else raw ``name``) in `directory`, or None."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(directory):
    return [name for name in MNIST_FILES if _find_mnist_file(directory, name) is None]


def load_mnist(root=None, download=True, mirrors=None, progress=True):
    """
    Load MNIST, downloading it into the user cache if it is nowhere local.

    The first directory of :func:`mnist_search_dirs` that holds all four
    files (each as ``name.gz`` or raw ``name``) is used. If none does and
    `download` is True, the files missing from :func:`mnist_cache_dir` are
    downloaded there. Every file's decompressed SHA-256 is checked against
    :data:`MNIST_FILES` on each load.

    Parameters
    ----------
    root : str, :class:`os.PathLike` or None
        A directory to look in before the default places. Default is None.
    download : bool
        Whether to download missing files. Default is True.
    mirrors : list of str or None
        Base URLs to try in order, each serving ``<name>.gz``. Default is
        None, meaning :data:`MNIST_MIRRORS`.
    progress : bool
        Whether to show a download progress bar (shown only if stderr is
        a terminal). Default is True.

    Returns
    -------
    train : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(train_images, train_labels)``: uint8 arrays of shape
        ``(60000, 28, 28)`` and ``(60000,)``.
    test : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(test_images, test_labels)``: uint8 arrays of shape
        ``(10000, 28, 28)`` and ``(10000,)``.

    Raises
    ------
    ValueError
        A found file is malformed or its checksum is wrong.
    MNISTNotFoundError
        The files are nowhere and `download` is False or every mirror failed.
    """
    searched = mnist_search_dirs(root)
    directory = next((d for d in searched if not _missing_files(d)), None)
    if directory is None:
        directory = mnist_cache_dir()
        if not download:
            failure = "downloading is disabled (download=False)"
            raise MNISTNotFoundError(_not_found_message(searched, directory, failure))
        try:
            for name in _missing_files(directory):
                _download_mnist_file(
                    name, directory, MNIST_MIRRORS if mirrors is None else mirrors, progress
                )
        except OSError as exc:
            failure = f"the download failed:\n{exc}"
            raise MNISTNotFoundError(_not_found_message(searched, directory, failure)) from exc

    arrays = {name: _read_mnist_file(_find_mnist_file(directory, name), name) for name in MNIST_FILES}
    return (
        (arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]),
        (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]),
    )


def _read_mnist_file(path, name):
    """One MNIST file, its header checked against the known dtype and shape before the
    payload is read, then its decompressed SHA-256."""
    dtype, shape = MNIST_SHAPES[name]
    return read_idx(path, sha256=MNIST_FILES[name], dtype=dtype, shape=shape)


def _not_found_message(searched, cache, failure):
    places = "\n".join(
        f"  {directory} (missing: {', '.join(_missing_files(directory))})"
        for directory in searched
    )
    files = ", ".join(f"{name}.gz" for name in MNIST_FILES)
    return (
        f"MNIST not found, and {failure}\n"
        f"Searched:\n{places}\n"
        f"Put the four files ({files}; raw, uncompressed files also work) in one "
        f"of these directories, e.g. {cache}, or point $NNSCRATCH_DATA or "
        f"load_mnist(root=...) at a directory holding them."
    )


def _download_mnist_file(name, directory, mirrors, progress):
    """Download ``name.gz`` into `directory` from the first of `mirrors` that
    serves it intact; raise OSError listing each mirror's failure otherwise."""
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        try:
            _download_verified(url, name, directory, progress)
            return
        except (OSError, ValueError) as exc:
            failures.append(f"  {url}: {exc}")
    raise OSError("\n".join(failures) or "no mirrors given")


def _download_verified(url, name, directory, progress):
    """Download `url` to a temporary file in `directory`, check it with
    :func:`read_idx` against its MNIST checksum, then atomically rename it to
    ``name.gz``, so the cache never holds a partial or corrupt file."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as tmp:
            _fetch(url, tmp, progress, desc=f"{name}.gz")
            tmp.flush()
            os.fsync(tmp.fileno())
        _read_mnist_file(tmp_path, name)
        os.replace(tmp_path, directory / f"{name}.gz")
    finally:
        tmp_path.unlink(missing_ok=True)


def _fetch(url, file, progress, desc):
    """Stream `url` into the open binary `file`, with a progress bar."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        show = progress and sys.stderr.isatty()
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not show,
        ) as bar:
            while chunk := response.read(_CHUNK_SIZE):
                file.write(chunk)
                bar.update(len(chunk))


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------


def to_float(images):
    """
    Convert uint8 images to float32 in [0, 1] with a channel axis.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, H, W)` or `(N, C, H, W)`
        uint8 pixel values.

    Returns
    -------
    x : :py:class:`ndarray <numpy.ndarray>` of shape `(N, 1, H, W)` or `(N, C, H, W)`
        float32 values ``images / 255``.

    Raises
    ------
    ValueError
        If `images` is not uint8 or not 3- or 4-dimensional.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"to_float expects uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim != 4:
        raise ValueError(
            f"to_float expects images of shape (N, H, W) or (N, C, H, W), got {images.shape}"
        )
    x = images.astype(np.float32)
    x /= 255
    return x


class Normalize:
    """
    Standardize inputs: ``(x - mean) / std`` in float32.

    Parameters
    ----------
    mean : float or sequence of float
        A scalar, or one value per channel of `(N, C, H, W)` inputs.
    std : float or sequence of float
        Same form as `mean`; every value must be positive.
    """

    def __init__(self, mean, std):
        self.mean, self.std = mean, std
        self._mean = self._per_channel(mean)
        self._std = self._per_channel(std)
        if np.any(self._std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std}")

    @staticmethod
    def _per_channel(value):
        value = np.asarray(value, dtype=np.float32)
        if value.ndim == 1:  # one value per channel: broadcast over (C, H, W)
            value = value.reshape(-1, 1, 1)
        return value

    def __call__(self, x):
        out = np.subtract(x, self._mean, dtype=np.float32)
        out /= self._std
        return out

    def __repr__(self):
        return f"Normalize(mean={self.mean!r}, std={self.std!r})"


def prepare_images(images, mean=0.5, std=0.5):
    """
    uint8 images to normalized float32 network inputs, in one call.

    With the defaults this is ``(images / 255 - 0.5) / 0.5``, mapping pixel
    values to [-1, 1]. Usable as a :class:`DataLoader` `transform`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, H, W)` or `(N, C, H, W)`
        uint8 pixel values.
    mean : float or sequence of float
        Subtracted after scaling to [0, 1]. Default is 0.5.
    std : float or sequence of float
        Divided by after subtracting `mean`. Default is 0.5.

    Returns
    -------
    x : :py:class:`ndarray <numpy.ndarray>` of shape `(N, C, H, W)`
        float32 inputs, with ``C = 1`` for 3-dimensional `images`.
    """
    return Normalize(mean, std)(to_float(images))


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Subsets
# ---------------------------------------------------------------------------


def subset_by_labels(images, labels, keep, remap=True):
    """
    Keep the samples whose label is in `keep`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        Integer labels.
    keep : sequence of int
        The labels to keep, without duplicates, e.g. ``[5, 6, 7, 8, 9]``.
    remap : bool
        Whether to relabel ``keep[i]`` as ``i``. Default is True.

    Returns
    -------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(M, ...)`
        A new array with the kept samples, in their original order.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(M,)`
        Their labels: int64 in ``0 .. len(keep) - 1`` if `remap`, else the
        original labels.
    """
    images, labels = _check_images_labels(images, labels)
    keep = [int(label) for label in keep]
    if not keep or len(set(keep)) != len(keep):
        raise ValueError(f"keep must be a non-empty list of distinct labels, got {keep}")
    mask = np.isin(labels, keep)
    kept_labels = labels[mask]
    if remap:
        remapped = np.empty(len(kept_labels), dtype=np.int64)
        for new_label, old_label in enumerate(keep):
            remapped[kept_labels == old_label] = new_label
        kept_labels = remapped
    return images[mask], kept_labels


def per_class_subset(images, labels, per_class, seed=0):
    """
    A seeded random sample of `per_class` examples of every class.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        Labels; every distinct value is a class.
    per_class : int or None
        Examples to draw from each class; None keeps everything.
    seed : int
        Seed of the draw. Default is 0.

    Returns
    -------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(M, ...)`
        New array of the chosen samples, in their original order.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(M,)`
        Their labels.

    Raises
    ------
    ValueError
        If some class has fewer than `per_class` examples.
    """
    images, labels = _check_images_labels(images, labels)
    if per_class is None:
        return images.copy(), labels.copy()
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"class {label} has {len(members)} examples, fewer than per_class={per_class}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    index = np.sort(np.concatenate(chosen))
    return images[index], labels[index]


def train_val_split(images, labels, *, val_fraction=None, n_val=None, seed=0):
    """
    Split a dataset at random into training and validation parts.

    Give exactly one of `val_fraction` and `n_val`.

    Parameters
    ----------
    images : :py:class:`ndarray <numpy.ndarray>` of shape `(N, ...)`
        The inputs.
    labels : :py:class:`ndarray <numpy.ndarray>` of shape `(N,)`
        The labels.
    val_fraction : float or None
        Fraction of samples for validation, in [0, 1]; the count is
        rounded to the nearest integer.
    n_val : int or None
        Number of samples for validation, in ``0 .. N``.
    seed : int
        Seed of the split. Default is 0.

    Returns
    -------
    train : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(images, labels)`` of the training part, in original order.
    val : tuple of :py:class:`ndarray <numpy.ndarray>`
        ``(images, labels)`` of the validation part, in original order.
    """
    images, labels = _check_images_labels(images, labels)
    n = len(labels)
    if (val_fraction is None) == (n_val is None):
        raise ValueError("give exactly one of val_fraction and n_val")
    if val_fraction is not None:
        if not 0 <= val_fraction <= 1:
            raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
        n_val = round(val_fraction * n)
    if not 0 <= n_val <= n:
        raise ValueError(f"n_val must be in 0..{n}, got {n_val}")
    order = np.random.default_rng(seed).permutation(n)
    val_index, train_index = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (
        (images[train_index], labels[train_index]),
        (images[val_index], labels[val_index]),
    )

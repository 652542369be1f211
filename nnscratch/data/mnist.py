"""MNIST: find the four IDX files (an explicit directory, ``$NNSCRATCH_DATA``, the repository's
``data/mnist/``, the user cache), download whatever is missing into the cache if allowed, and verify
the SHA-256 of every decompressed file on each load (:func:`load_mnist`)."""
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .idx import read_idx

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
REPO_MNIST_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"


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

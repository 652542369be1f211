"""Which implementation of the hot operations is active: compiled kernels or the NumPy reference.

* ``"cython"``: :mod:`nnscratch._kernels`, built from ``nnscratch/_kernels.pyx`` at install time;
* ``"numpy"``: :mod:`nnscratch.backends.reference`, the readable definition every kernel is tested against.

The default is ``"cython"`` when the extension is built, otherwise ``"numpy"`` with one warning.
``NNSCRATCH_BACKEND=numpy|cython`` in the environment, :func:`set_backend` or the
:func:`use_backend` context manager choose one explicitly. ``NNSCRATCH_NUM_THREADS`` or
:func:`set_num_threads` set how many threads the compiled kernels use (default: the cores
this process may run on).

Importing nnscratch changes nothing in the process: no thread pool is resized and malloc is left
alone. The compiled kernels call a BLAS (scipy's ``cython_blas``) from inside their own threads;
that BLAS is held at :data:`KERNEL_BLAS_THREADS` thread only while a kernel runs
(:func:`kernel_blas`), then given back its thread count. Keeping freed memory for reuse is
something a training script turns on: :func:`nnscratch.malloc.keep_freed_memory`.
"""
import contextlib
import ctypes
import itertools
import os
import threading
import warnings

from . import reference

try:
    from .. import _kernels
except ImportError as error:  # the extension was not built (e.g. a plain source checkout)
    _kernels = None
    _KERNELS_IMPORT_ERROR = error

BACKENDS = ("cython", "numpy")
_modules = {"numpy": reference}
if _kernels is not None:
    _modules["cython"] = _kernels

_active = None


def _check_name(name):
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown nnscratch backend {name!r}; choose one of {BACKENDS}")
    if name not in _modules:
        raise ImportError(
            f"the nnscratch backend 'cython' was requested but the compiled kernels are not built "
            f"({_KERNELS_IMPORT_ERROR}); build them with `pip install -e .` or use 'numpy'"
        )
    return name


def backend():
    """Name of the active backend: ``"cython"`` or ``"numpy"``."""
    return _active


def set_backend(name):
    """Make ``name`` (``"cython"`` or ``"numpy"``) the active backend; return the previous one."""
    global _active
    previous, _active = _active, _check_name(name)
    return previous


@contextlib.contextmanager
def use_backend(name):
    """Run a block with another backend: ``with use_backend("numpy"): ...``."""
    previous = set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def kernels():
    """The module implementing the active backend (same function names in both)."""
    return _modules[_active]


def kernels_info():
    """What was built: ``{"built": bool, "openmp": bool, "path": str, "built_at": "YYYY-MM-DD HH:MM:SS"}``
    (``path`` and ``built_at`` only when built; ``error`` says why not). Benchmarks and bug reports print it."""
    if _kernels is None:
        return {"built": False, "openmp": False, "error": str(_KERNELS_IMPORT_ERROR)}
    import time
    path = _kernels.__file__
    return {"built": True, "openmp": bool(_kernels.OPENMP), "path": path,
            "built_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))}


def available_cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n):
    """Number of threads the compiled kernels use (``n >= 1``)."""
    n = int(n)
    if not 1 <= n <= 1024:
        raise ValueError(f"set_num_threads: the number of threads must be between 1 and 1024, got {n}")
    if _kernels is not None:
        _kernels.set_num_threads(n)
    global _num_threads
    _num_threads = n


def get_num_threads():
    return _num_threads


KERNEL_BLAS_THREADS = 1  # threads of the BLAS the compiled kernels call from inside their own threads


def _kernel_blas_libraries():
    """threadpoolctl's controllers of the BLAS scipy loaded (the one ``cython_blas`` calls); all BLAS
    libraries if none is scipy's. Numpy's own BLAS is a different library in the wheels, left alone."""
    import scipy
    from threadpoolctl import ThreadpoolController

    scipy_dir = os.path.dirname(os.path.abspath(scipy.__file__))
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    scipy_places = (scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)  # the package, or its wheel's bundled libraries
    return [lib for lib in blas if os.path.abspath(lib.filepath).startswith(scipy_places)] or blas


class _ThreadCount:
    """``get()`` and ``set(n)`` of one BLAS library's thread count. An OpenBLAS with its own thread
    pool (threading layer ``"pthreads"``, as in the numpy and scipy wheels) is called directly
    through ctypes: about 0.2 µs a call against threadpoolctl's 1 µs, and never skipped
    (threadpoolctl lets only one Python thread at a time resize such a pool). Any other library
    goes through threadpoolctl."""

    def __init__(self, controller):
        self.get, self.set = (lambda: controller.num_threads), controller.set_num_threads
        if controller.internal_api == "openblas" and getattr(controller, "threading_layer", None) == "pthreads":
            library = ctypes.CDLL(controller.filepath)  # the loaded library's handle, not a second copy
            for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):  # as the wheels name them
                get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    self.get, self.set = get, set_
                    break


class _KernelBlasLimit:
    """``with kernel_blas():`` holds the kernels' BLAS at ``KERNEL_BLAS_THREADS`` for the block, then
    restores its thread count. Nested and concurrent blocks (threads calling kernels at the same
    time) share one limit: the first to enter sets it, the last to leave restores it. While a block
    runs, scipy's BLAS is single-threaded for the whole process; outside, it is as the user left it.
    Cost: about 1 µs per block (two or three calls into OpenBLAS and a lock), against 0.1 ms and more of kernel."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._libraries = None  # threadpoolctl's controllers of the kernels' BLAS, found on first use (not at import)
        self._counts = []  # a _ThreadCount per library
        self._restore = []

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                if self._libraries is None:
                    self._libraries = _kernel_blas_libraries()
                    self._counts = [_ThreadCount(lib) for lib in self._libraries]
                self._restore = [(count, n) for count in self._counts if (n := count.get()) != KERNEL_BLAS_THREADS]
                for count, _ in self._restore:
                    count.set(KERNEL_BLAS_THREADS)
            self._depth += 1
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for count, n in self._restore:
                    count.set(n)
                self._restore = []


_kernel_blas_limit = _KernelBlasLimit()


def kernel_blas():
    """Context for a kernel call that uses BLAS: the limit above with the compiled backend, nothing
    with the NumPy reference (whose matrix products may use every BLAS thread)."""
    return _kernel_blas_limit if _active == "cython" else contextlib.nullcontext()


def _initialize():
    requested = os.environ.get("NNSCRATCH_BACKEND", "").strip()
    if requested:
        set_backend(requested)
    elif _kernels is not None:
        set_backend("cython")
    else:
        warnings.warn(
            f"nnscratch: the compiled kernels are not built ({_KERNELS_IMPORT_ERROR}); using the "
            "slower NumPy reference backend. Build them with `pip install -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
        set_backend("numpy")
    set_num_threads(os.environ.get("NNSCRATCH_NUM_THREADS", "").strip() or available_cores())


_num_threads = 1
_initialize()

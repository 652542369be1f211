"""Which implementation of the hot operations is active: compiled kernels or the NumPy reference.

* ``"cython"``: :mod:`nnscratch._kernels`, built from ``nnscratch/_kernels.pyx`` at install time;
* ``"numpy"``: :mod:`nnscratch.reference`, the readable definition every kernel is tested against.

The default is ``"cython"`` when the extension is built, otherwise ``"numpy"`` with one warning.
``NNSCRATCH_BACKEND=numpy|cython`` in the environment, :func:`set_backend` or the
:func:`use_backend` context manager choose one explicitly. ``NNSCRATCH_NUM_THREADS`` or
:func:`set_num_threads` set how many threads the compiled kernels use (default: the cores
this process may run on). At import, malloc is asked to keep freed memory for reuse
(:mod:`nnscratch._malloc`; ``NNSCRATCH_KEEP_FREED_MEMORY=0`` turns that off).
"""
import contextlib
import os
import warnings

from . import _malloc, reference

try:
    from . import _kernels
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


def _single_threaded_kernel_blas():
    """The compiled kernels call scipy's BLAS (``cython_blas``) from inside their own threads, so that
    BLAS must not start threads of its own: set it to one thread. Only the library scipy loaded is
    changed, not numpy's, unless the two share one library (a system OpenBLAS), in which case
    numpy's matrix products become single-threaded too."""
    import scipy
    from threadpoolctl import ThreadpoolController

    scipy_dir = os.path.dirname(os.path.abspath(scipy.__file__))
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    scipy_places = (scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)  # the package, or its wheel's bundled libraries
    scipy_blas = [lib for lib in blas if os.path.abspath(lib.filepath).startswith(scipy_places)] or blas
    for lib in scipy_blas:
        lib.set_num_threads(1)


def _initialize():
    requested = os.environ.get("NNSCRATCH_BACKEND", "").strip()
    _malloc.keep_freed_memory()
    if _kernels is not None:
        _single_threaded_kernel_blas()
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

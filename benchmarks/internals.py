"""THE ONE PLACE the benchmarks use nnscratch's private names. Everything else uses the public API.

What is here has no public equivalent yet:

* :func:`kernels_info`: whether the compiled kernels were built with OpenMP, which file was
  loaded and when it was built (the public API only says whether the cython backend can be used:
  ``nnscratch.set_backend("cython")`` raises ImportError when it cannot). A public
  ``nnscratch.backends.kernels_info()`` would replace it.
* :func:`kernel_blas_libraries` and :func:`replace_kernel_blas`: only for ``import_effects.py``,
  which rebuilds what the import *used to* do (scipy's BLAS at one thread for good, no per-call
  limit) and counts the per-call limits of a training step: by nature a look inside.

Works before and after the package's move of ``nnscratch/_backend.py`` to ``nnscratch/backends/``.
"""
import contextlib
import importlib
import time
from pathlib import Path


def _backends():
    try:
        return importlib.import_module("nnscratch.backends")
    except ModuleNotFoundError:  # before the layout move
        return importlib.import_module("nnscratch.backends")


def kernels_info():
    """``{"built", "openmp", "path", "mtime"}`` of the compiled kernels (``built`` False without them)."""
    try:
        kernels = importlib.import_module("nnscratch._kernels")
    except ImportError:
        return {"built": False, "openmp": False}
    so = Path(kernels.__file__)
    return {"built": True, "openmp": bool(getattr(kernels, "OPENMP", False)), "path": str(so),
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(so.stat().st_mtime))}


def kernel_blas_libraries():
    """threadpoolctl's controllers of the BLAS the compiled kernels call (scipy's)."""
    return _backends()._kernel_blas_libraries()


def kernel_blas_threads():
    """The thread count the kernels hold their BLAS at while they run."""
    return _backends().KERNEL_BLAS_THREADS


def kernel_blas():
    """The per-call limit itself (a context manager), as the kernels' callers enter it."""
    return _backends().kernel_blas()


@contextlib.contextmanager
def replace_kernel_blas(factory):
    """Within the block, kernel calls enter ``factory()`` instead of the per-call BLAS limit."""
    module = _backends()
    original = module.kernel_blas
    module.kernel_blas = factory
    try:
        yield original
    finally:
        module.kernel_blas = original

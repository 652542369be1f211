"""THE ONE PLACE the benchmarks use nnscratch's private names. Everything else uses the public API.

Only ``import_effects.py`` needs them: it rebuilds what the import *used to* do (scipy's BLAS at one
thread for good, no per-call limit) and counts the per-call limits of a training step, which is by
nature a look inside ``nnscratch.backends``:

* :func:`kernel_blas_libraries`: threadpoolctl's controllers of the BLAS the kernels call
  (``nnscratch.backends._kernel_blas_libraries``);
* :func:`replace_kernel_blas`: swaps ``nnscratch.backends.kernel_blas``, the per-call limit the
  operations enter around each kernel call, for something else within a block.
"""
import contextlib

from nnscratch import backends


def kernel_blas_libraries():
    """threadpoolctl's controllers of the BLAS the compiled kernels call (scipy's)."""
    return backends._kernel_blas_libraries()


@contextlib.contextmanager
def replace_kernel_blas(factory):
    """Within the block, kernel calls enter ``factory()`` instead of the per-call BLAS limit; yields the original."""
    original = backends.kernel_blas
    backends.kernel_blas = factory
    try:
        yield original
    finally:
        backends.kernel_blas = original

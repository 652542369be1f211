"""Keep freed memory in the process, so that a training step does not fault it back in every time.

Opt-in: a training script calls :func:`keep_freed_memory` once at its start (the examples and the
benchmark do); importing nnscratch never changes malloc, since the settings hold for the whole
process, the user's own arrays and libraries included.

A training step of the seed's Net allocates and frees about 100 MB of activations and gradients,
in arrays of 0.1 to 10 MB. glibc's malloc serves such arrays from its heap but gives the top of the
heap back to the kernel as soon as enough of it is free, so the next step touches fresh pages
again: about 900 page faults and 4 to 7 ms of kernel time (mostly zeroing those pages) per step
on the machine of ``docs/performance.md``. Two settings remove them:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest): arrays below it come from the heap, where freed
  blocks are reused, rather than from a private ``mmap`` that is unmapped on ``free``;
* ``M_TRIM_THRESHOLD`` = 2 GiB: the heap is not shrunk unless that much lies free at its top.

The cost: memory freed by arrays under 32 MiB stays with the process (reused by the next
allocations, not returned to the system), as in PyTorch's caching allocators: after freeing 1.5 GB
of arrays, a process may still hold 1.6 GB. So it suits a training script, not a library import or
a long-lived server. Only glibc is touched; nothing happens when ``NNSCRATCH_KEEP_FREED_MEMORY=0``
or when the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (their
choice wins).
"""
import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int

applied = False  # whether keep_freed_memory changed malloc's settings in this process


def keep_freed_memory():
    """Apply the two settings above (see the module docstring); return whether they were applied."""
    global applied
    if applied:
        return True
    if os.environ.get("NNSCRATCH_KEEP_FREED_MEMORY", "").strip() == "0":
        return False
    if any(name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return applied

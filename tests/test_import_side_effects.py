"""``import nnscratch`` changes nothing in the host process (issue 10, item 10): no BLAS thread
count, no malloc setting. Each check runs in a fresh interpreter, so the import really happens.

* BLAS: every BLAS library is set to 3 threads before the import; after the import, and after a
  forward and backward through the compiled kernels, threadpoolctl still reports 3. Inside
  ``_backend.kernel_blas()`` (what the kernels run under) scipy's BLAS is at one thread, also
  when the block runs in another Python thread than the one that set the counts.
* malloc: 64 MiB of 4 MiB arrays are allocated and freed; with glibc's settings untouched they are
  ``mmap``-ed and returned to the system on ``free``, so the resident size falls back. With
  ``nnscratch.malloc.keep_freed_memory()`` (the opt-in) the same memory stays with the process,
  which shows the probe sees the setting.
"""
import json
import os
import platform
import subprocess
import sys

import pytest

BLAS_CHILD = r"""
import json
import scipy.linalg  # loads scipy's BLAS, the one the compiled kernels call
from threadpoolctl import ThreadpoolController, threadpool_info

def blas_threads():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

for lib in ThreadpoolController().lib_controllers:
    if lib.user_api == "blas":
        lib.set_num_threads(3)
before = blas_threads()

import numpy as np
import nnscratch
after_import = blas_threads()

net = nnscratch.models.seed_net()
y = net(np.zeros((2, 1, 28, 28), np.float32))
net.backward(np.ones_like(y))
after_kernels = blas_threads()

from nnscratch import backends as _backend
with _backend.kernel_blas():
    with _backend.kernel_blas():  # nested: the outer block restores
        inside = blas_threads()
    still_inside = blas_threads()

import threading
seen = {}
def kernel_in_another_thread():  # threadpoolctl lets only this process's first setter (the main thread) resize
    with _backend.kernel_blas():  # OpenBLAS's pool; the kernels' limit must hold in any thread all the same
        seen["inside"] = blas_threads()
worker = threading.Thread(target=kernel_in_another_thread)
worker.start()
worker.join()
print(json.dumps({"before": before, "after_import": after_import, "after_kernels": after_kernels,
                  "inside": inside, "still_inside": still_inside, "in_another_thread": seen["inside"],
                  "after": blas_threads(),
                  "scipy_blas": [lib.filepath for lib in _backend._kernel_blas_limit._libraries],
                  "backend": nnscratch.backend()}))
"""

MALLOC_CHILD = r"""
import json, os, sys
import numpy as np
import nnscratch
if sys.argv[1] == "opt-in":
    from nnscratch import malloc
    malloc.keep_freed_memory()

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

base = rss_mib()
arrays = [np.ones(2**19) for _ in range(16)]  # 16 × 4 MiB, all alive at once
peak = rss_mib()
del arrays
from nnscratch import malloc
print(json.dumps({"grew_mib": peak - base, "held_mib": rss_mib() - base, "applied": malloc.applied}))
"""


def run(code, *args):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("NNSCRATCH_", "MALLOC_", "OPENBLAS_", "OMP_"))}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_kernel_calls_leave_blas_threads_alone():
    result = run(BLAS_CHILD)
    assert result["backend"] == "cython"
    before = result["before"]
    assert before and set(before.values()) == {3}, before
    for moment in ("after_import", "after_kernels", "after"):
        assert result[moment] == before, f"{moment}: {result[moment]} (before the import: {before})"
    scipy_blas = result["scipy_blas"]
    assert scipy_blas, "no BLAS found for the kernels"
    for state in ("inside", "still_inside", "in_another_thread"):
        for path, threads in result[state].items():
            assert threads == (1 if path in scipy_blas else 3), f"{state} a kernel call: {path} at {threads} threads"


glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="the settings are glibc's"
)


@glibc_only
def test_import_leaves_malloc_alone():
    untouched = run(MALLOC_CHILD, "import-only")
    assert untouched["applied"] is False
    assert untouched["grew_mib"] > 48, untouched  # the probe did allocate
    assert untouched["held_mib"] < 16, f"freed arrays stayed with the process after a plain import: {untouched}"


@glibc_only
def test_the_probe_sees_the_opt_in():
    kept = run(MALLOC_CHILD, "opt-in")
    assert kept["applied"] is True
    assert kept["held_mib"] > 48, f"keep_freed_memory() should keep the freed 64 MiB: {kept}"

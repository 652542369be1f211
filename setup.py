"""Build the compiled kernels ``nnscratch._kernels`` from ``nnscratch/_kernels.pyx``.

OpenMP is used when the C compiler accepts ``-fopenmp``; otherwise the kernels
are built serial (``prange`` then runs as a plain loop) and still release the GIL.
"""
import os
import shutil
import subprocess
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _compiles(source_code, flags):
    """Whether the C compiler (``$CC`` or ``cc``) builds ``source_code`` with ``flags``."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(source_code)
        result = subprocess.run(compiler.split() + flags + [source, "-o", os.path.join(tmp, "probe")], capture_output=True)
    return result.returncode == 0


def _openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) if unsupported."""
    if os.environ.get("NNSCRATCH_NO_OPENMP"):
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    if not _compiles("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n", ["-fopenmp"]):
        print("nnscratch: the compiler does not support OpenMP; building serial kernels")
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


compile_args, link_args = _openmp_flags()
if sys.platform != "win32":
    # -ffp-contract=off: never fuse a multiply and an add into one FMA (one rounding instead of
    # two), so that the kernels round exactly as the NumPy reference's separate operations do
    compile_args = compile_args + ["-O3", "-ffp-contract=off"]
    # GCC vectorizes a loop whose arrays might overlap only behind at most 10 run-time overlap
    # checks by default; the Winograd transforms (_kernels_winograd.pxi) read 4-6 arrays and write
    # 4-6 in one loop over tiles, and vectorized run 3x faster. Other compilers may not know --param.
    alias_checks = ["--param", "vect-max-version-for-alias-checks=64"]
    if _compiles("int main(void){return 0;}\n", alias_checks):
        compile_args += alias_checks

extensions = [
    Extension(
        "nnscratch._kernels",
        ["nnscratch/_kernels.pyx"],
        depends=["nnscratch/_kernels_conv.pxi", "nnscratch/_kernels_pool.pxi",  # included by the .pyx
                 "nnscratch/_kernels_winograd.pxi", "nnscratch/_kernels_winograd_transforms.pxi"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)

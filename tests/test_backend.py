"""Backend selection: the compiled kernels by default, the NumPy reference on request or as a fallback."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import nnscratch

from strategies import random_images

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter (imports happen anew) and return its stdout and stderr."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NNSCRATCH_")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_the_compiled_backend_is_the_default():
    out, err = run_python("import nnscratch; print(nnscratch.backend())")
    assert out.strip() == "cython" and "Warning" not in err


def test_environment_variable_forces_the_reference():
    out, _ = run_python("import nnscratch; print(nnscratch.backend())", NNSCRATCH_BACKEND="numpy")
    assert out.strip() == "numpy"


def test_without_the_extension_the_reference_runs_with_one_warning():
    code = (
        "import sys, warnings\n"
        "sys.modules['nnscratch._kernels'] = None  # as if the extension had not been built\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import nnscratch, numpy as np\n"
        "    y = nnscratch.Conv2d(1, 2, 3)(np.ones((1, 1, 5, 5), np.float32))\n"
        "print(nnscratch.backend(), y.shape, len(caught), caught[0].category.__name__, caught[0].message)\n"
    )
    out, _ = run_python(code)
    assert out.split()[0] == "numpy"
    assert "(1, 2, 3, 3) 1 RuntimeWarning" in out and "not built" in out


def test_kernels_info_says_what_was_built():
    info = nnscratch.backends.kernels_info()
    assert info["built"] is True and info["path"].startswith(str(ROOT / "nnscratch" / "_kernels"))
    assert info["openmp"] is nnscratch.backends._kernels.OPENMP and len(info["built_at"]) == 19
    code = ("import sys, warnings\nsys.modules['nnscratch._kernels'] = None\nwarnings.simplefilter('ignore')\n"
            "import nnscratch\nprint(nnscratch.backends.kernels_info())")
    out, _ = run_python(code)
    assert out.startswith("{'built': False, 'openmp': False, 'error': ") and "_kernels" in out


def test_forcing_cython_without_the_extension_is_a_clear_error():
    code = (
        "import sys\n"
        "sys.modules['nnscratch._kernels'] = None\n"
        "try:\n"
        "    import nnscratch\n"
        "except ImportError as error:\n"
        "    print('ImportError:', error)\n"
    )
    out, _ = run_python(code, NNSCRATCH_BACKEND="cython")
    assert out.startswith("ImportError:") and "not built" in out


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown nnscratch backend 'fortran'"):
        nnscratch.set_backend("fortran")


def test_use_backend_restores_the_previous_one():
    before = nnscratch.backend()
    with nnscratch.use_backend("numpy"):
        assert nnscratch.backend() == "numpy"
    assert nnscratch.backend() == before


def test_threads_from_the_environment_and_the_function():
    out, _ = run_python("import nnscratch; print(nnscratch.get_num_threads(), nnscratch.backends._kernels.get_num_threads())",
                        NNSCRATCH_NUM_THREADS="1")
    assert out.split() == ["1", "1"]
    previous = nnscratch.get_num_threads()
    try:
        nnscratch.set_num_threads(1)
        assert nnscratch.get_num_threads() == 1
        with pytest.raises(ValueError, match="between 1 and 1024"):
            nnscratch.set_num_threads(0)
    finally:
        nnscratch.set_num_threads(previous)


def test_both_backends_train_the_same_step():
    """One step of a small network gives the same parameters on both backends (float64)."""
    results = []
    for name in ("numpy", "cython"):
        with nnscratch.use_backend(name):
            nnscratch.manual_seed(3)
            net = nnscratch.Sequential(nnscratch.Conv2d(1, 3, 3), nnscratch.ReLU(), nnscratch.MaxPool2d(2),
                                       nnscratch.Flatten(), nnscratch.Dense(27, 4)).double()
            x = random_images(5, size=8, dtype=np.float64)
            loss = nnscratch.CrossEntropyLoss()
            loss(net(x), np.arange(5) % 4)
            net.backward(loss.backward())
            nnscratch.SGD(net.parameters(), lr=0.1, momentum=0.9).step()
            results.append([p.data.copy() for p in net.parameters()])
    for ours, reference in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)

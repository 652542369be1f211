"""Shared fixtures for the nnscratch test-suite.

* ``backend``: runs a test once per backend (``"numpy"`` and ``"cython"``) with that backend
  active. The cython parameter FAILS (never skips) when the compiled kernels are not built:
  the project's done-criteria require the cython backend to be active.
* ``kernels_module``: the compiled :mod:`nnscratch._kernels` (FAILS when it is not built).
* ``record`` / the ``record_errors`` fixture: remember the relative errors of every gradient
  check; the largest ones are printed at the end of the session (``pytest_terminal_summary``)
  so they can be quoted ("the checks with the largest relative errors seen").
"""
import pytest

import nnscratch

from strategies import compiled_kernels

BACKENDS = ["numpy", "cython"]

# name of a gradient check -> largest relative error it produced
GRADCHECK_ERRORS = {}
# name of a gradient check -> {which gradient: relative error}
GRADCHECK_DETAIL = {}


def record(name, errors):
    """Remember the relative errors of one gradient check.

    ``errors`` is a float or a ``{gradient name: relative error}`` dict as returned by
    :func:`nnscratch.gradient_check.check_module` / :func:`nnscratch.gradcheck`.
    Returns ``errors`` unchanged so it can wrap a call.
    """
    items = errors.items() if isinstance(errors, dict) else [("loss input", errors)]
    worst = max((float(e) for _, e in items), default=0.0)
    GRADCHECK_ERRORS[name] = max(worst, GRADCHECK_ERRORS.get(name, 0.0))
    detail = GRADCHECK_DETAIL.setdefault(name, {})
    for which, e in items:
        detail[which] = max(float(e), detail.get(which, 0.0))
    return errors


@pytest.fixture
def record_errors():
    """The :func:`record` helper, as a fixture (no import of conftest needed)."""
    return record


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Activate each backend in turn; yields its name."""
    if request.param == "cython":
        compiled_kernels()
    with nnscratch.use_backend(request.param):
        assert nnscratch.backend() == request.param
        yield request.param


@pytest.fixture
def kernels_module():
    """The compiled kernel module (the test FAILS if it is not built)."""
    return compiled_kernels()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not GRADCHECK_ERRORS:
        return
    tr = terminalreporter
    tr.section("largest relative gradient-check errors")
    top = sorted(GRADCHECK_ERRORS.items(), key=lambda item: item[1], reverse=True)[:10]
    for name, error in top:
        detail = GRADCHECK_DETAIL.get(name) or {"?": error}
        worst_part = max(detail, key=detail.get)
        tr.write_line(f"{error:10.3e}  {name}  [{worst_part}]")
    tr.write_line(f"({len(GRADCHECK_ERRORS)} gradient checks recorded, all errors <= {top[0][1]:.3e})")

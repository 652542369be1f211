"""The version is written once, in pyproject.toml; ``nnscratch.__version__`` reads it back."""
import re
from pathlib import Path

import nnscratch

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_version_comes_from_pyproject():
    declared = re.search(r'^version = "([^"]+)"$', PYPROJECT.read_text(), flags=re.MULTILINE)
    assert declared, "pyproject.toml declares no `version = \"...\"` line"
    assert nnscratch.__version__ == declared.group(1), (
        f"nnscratch.__version__ is {nnscratch.__version__!r} but pyproject.toml says {declared.group(1)!r}: "
        "reinstall with `python -m pip install -e .` so the package metadata is current")


def test_version_is_not_written_in_the_package():
    """No second copy of the version string to keep in step."""
    source = (PYPROJECT.parent / "nnscratch" / "__init__.py").read_text()
    assert not re.search(r'__version__\s*=\s*["\']', source)

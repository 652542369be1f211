"""The README's test command also lints: ruff, with the rules of pyproject.toml's [tool.ruff]."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True)
    assert "No module named ruff" not in result.stderr, 'ruff is missing: python -m pip install -e ".[dev]"'
    assert result.returncode == 0, result.stdout + result.stderr

"""The study notebooks are tests: each runs top to bottom in a real Jupyter kernel in quick mode.

Their sources are ``notebooks/NN_name.py`` (jupytext percent format); the committed
``NN_name.ipynb`` must hold the same cells, executed in full mode, under 1 MiB.
"""
import importlib.util
from pathlib import Path

import jupytext
import nbformat
import pytest

from nnscratch import notebook as nb_session

ROOT = Path(__file__).resolve().parents[1]


def _load_build():
    spec = importlib.util.spec_from_file_location("notebook_build", ROOT / "notebooks" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.sources()


def _cells(notebook):
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_notebooks():
    assert len(SOURCES) >= 4, f"expected the four study notebooks in notebooks/, found {[p.name for p in SOURCES]}"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs_in_quick_mode(source):
    notebook, seconds = build.execute(source, quick=True, timeout=300)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "every code cell ran"
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_notebook_matches_its_source_and_was_run_in_full_mode(source):
    committed = source.with_suffix(".ipynb")
    assert committed.is_file(), f"{committed.name} is missing: run `python notebooks/build.py {source.stem[:2]}`"
    executed = nbformat.read(committed, as_version=4)
    assert _cells(executed) == _cells(jupytext.read(source)), (
        f"{committed.name} and {source.name} disagree: edit the .py, then `python notebooks/build.py {source.stem[:2]}`")
    assert executed.metadata.get("nnscratch", {}).get("mode") == "full", f"{committed.name} was not executed in full mode"
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{committed.name} has cells that were not executed"
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    size = committed.stat().st_size
    assert size < build.MAX_BYTES, f"{committed.name} is {size} bytes, the limit is {build.MAX_BYTES}"


def test_repository_root_is_the_same_from_the_notebooks_folder_and_the_root(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    assert nb_session.repository_root(tmp_path) == tmp_path.resolve()
    assert nb_session.repository_root(tmp_path / "notebooks") == tmp_path.resolve()
    out = nb_session.output_folder("01 — Convolution and pooling", tmp_path / "notebooks")
    assert out == tmp_path.resolve() / "runs" / "notebooks" / "01_convolution_and_pooling" and out.is_dir()


def test_output_folder_is_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "runs/" in ignored


@pytest.mark.parametrize("value, quick", [("1", True), ("yes", True), ("0", False), ("", False), ("off", False)])
def test_quick_mode_comes_from_the_environment(monkeypatch, value, quick):
    monkeypatch.setenv(nb_session.QUICK_ENV, value)
    assert nb_session.is_quick() is quick


def test_a_misspelt_quick_mode_is_an_error(monkeypatch):
    monkeypatch.setenv(nb_session.QUICK_ENV, "fast")
    with pytest.raises(ValueError, match="NNSCRATCH_QUICK='fast'"):
        nb_session.is_quick()


def test_start_prints_backend_threads_and_mode_outside_a_kernel(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(nb_session.QUICK_ENV, "1")
    session = nb_session.start("99 test")
    printed = capsys.readouterr().out
    assert "backend" in printed and "kernel threads" in printed and "quick" in printed
    assert session.quick and session.out.is_dir()

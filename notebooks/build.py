"""Execute the study notebooks in a real Jupyter kernel.

Each notebook's source is ``notebooks/NN_name.py`` in jupytext's percent format (it diffs and
reviews like code); ``NN_name.ipynb`` beside it is the same cells with their outputs, executed in
full mode, so that a reader sees every figure without running anything. This script makes the
second from the first::

    python notebooks/build.py                 # execute every notebook in full mode, write the .ipynb files
    python notebooks/build.py 01 03           # only the notebooks whose names start with 01 or 03
    python notebooks/build.py --quick         # quick mode (NNSCRATCH_QUICK=1): run, time, write nothing

The tests (``tests/test_notebooks.py``) execute every notebook through :func:`execute` in quick
mode. Kernels run with ``notebooks/`` as their working directory, as Jupyter runs them.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
MAX_BYTES = 1 << 20  # a committed notebook stays under 1 MiB
FORMATS = "ipynb,py:percent"


def sources(prefixes=()):
    """The notebook sources ``notebooks/NN_*.py`` in order, those starting with one of `prefixes` if given."""
    found = sorted(path for path in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if prefixes:
        found = [path for path in found if path.stem.startswith(tuple(prefixes))]
    return found


def read_source(path):
    """The notebook of a percent-format source, paired with its .ipynb."""
    notebook = jupytext.read(path)
    notebook.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def execute(path, quick, timeout=900):
    """Run the notebook of source `path` top to bottom in a fresh kernel; return (notebook, seconds).

    The kernel gets ``NNSCRATCH_QUICK`` for the mode and ``NNSCRATCH_PROGRESS=0`` (no progress bars
    in the outputs). A failing cell raises nbclient's ``CellExecutionError`` naming the cell."""
    notebook = read_source(path)
    env = dict(os.environ, NNSCRATCH_QUICK="1" if quick else "0", NNSCRATCH_PROGRESS="0")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.km = client.create_kernel_manager()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nnscratch-kernel-") as sockets:
        client.km.transport, client.km.ip = "ipc", os.path.join(sockets, "kernel")  # local sockets, not TCP
        client.execute(env=env)
    seconds = time.perf_counter() - started
    notebook.metadata["nnscratch"] = {"mode": "quick" if quick else "full", "seconds": round(seconds, 1)}
    return notebook, seconds


def write(notebook, path):
    """Write the executed notebook next to its source as ``.ipynb``, atomically; return its size in bytes."""
    target = path.with_suffix(".ipynb")
    temporary = target.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, temporary)
    os.replace(temporary, target)
    return target.stat().st_size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only notebooks whose names start with these (e.g. 01)")
    parser.add_argument("--quick", action="store_true", help="quick mode: execute and time, write nothing")
    args = parser.parse_args(argv)
    paths = sources(args.names)
    if not paths:
        parser.error(f"no notebook in {NOTEBOOKS} matches {args.names}")
    for path in paths:
        notebook, seconds = execute(path, quick=args.quick)
        if args.quick:
            print(f"{path.stem}: {seconds:.1f} s (quick mode)")
            continue
        size = write(notebook, path)
        print(f"{path.stem}: {seconds:.1f} s (full mode), {size / 1024:.0f} KiB")
        if size > MAX_BYTES:
            print(f"  too large: {size} bytes, the limit is {MAX_BYTES}; lower the figures' count or dpi",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

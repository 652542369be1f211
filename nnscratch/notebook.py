"""What every study notebook does first: pick its mode, find its output folder, say where it runs.

The notebooks in ``notebooks/`` run in two modes. *Full* mode is what a reader sees: the
committed copies are executed that way, with every experiment at its real size. *Quick* mode
(``NNSCRATCH_QUICK=1`` in the environment) runs every cell on small data, so that the test
suite can execute each notebook top to bottom in a Jupyter kernel in seconds; claims about
accuracy are checked only in full mode.

A notebook starts with::

    from nnscratch import notebook
    session = notebook.start("01 — Convolution and pooling")
    QUICK, OUT = session.quick, session.out

Nothing here runs at import.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

QUICK_ENV = "NNSCRATCH_QUICK"
FIGURE_DPI = 80  # PNG figures in the notebooks' outputs: legible, and each notebook stays well under 1 MiB

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Session:
    """A notebook's settings: its title, ``quick`` (bool) and ``out``, the folder for its files."""

    title: str
    quick: bool
    out: Path


def is_quick():
    """True when ``NNSCRATCH_QUICK`` asks for quick mode (1/true/yes/on; 0/false/no/off or unset: full)."""
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{QUICK_ENV}={value!r}: expected 1 (quick mode) or 0 (full mode)")


def repository_root(start=None):
    """The nnscratch checkout that holds the notebooks: `start` (default: the working directory) or
    the nearest folder above it with both ``notebooks/`` and ``pyproject.toml``. So a notebook
    finds the same root whether Jupyter runs it from ``notebooks/`` or from the repository root.
    Outside a checkout, `start` itself."""
    start = Path.cwd() if start is None else Path(start)
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "notebooks").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    return start


def output_folder(title, start=None):
    """``runs/notebooks/<slug of title>/`` under :func:`repository_root` (``runs/`` is git-ignored);
    created if missing."""
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "notebook"
    folder = repository_root(start) / "runs" / "notebooks" / slug
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start(title):
    """Begin a notebook: print the library's version, backend, kernel threads and the mode, make
    the inline figures PNG at :data:`FIGURE_DPI`, and return its :class:`Session`."""
    import nnscratch

    quick = is_quick()
    mode = f"quick ({QUICK_ENV}=1)" if quick else f"full (set {QUICK_ENV}=1 for a quick run)"
    print(title)
    print(f"nnscratch {nnscratch.__version__} · backend {nnscratch.backend()} · "
          f"{nnscratch.get_num_threads()} kernel threads · {mode} mode")
    _inline_png()
    return Session(title=title, quick=quick, out=output_folder(title))


def _inline_png():
    """In a Jupyter kernel, show matplotlib figures as PNG at FIGURE_DPI; elsewhere do nothing."""
    from .training import in_jupyter_kernel

    if not in_jupyter_kernel():
        return
    from IPython import get_ipython
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    get_ipython().run_line_magic("matplotlib", "inline")
    set_matplotlib_formats("png", dpi=FIGURE_DPI, bbox_inches="tight")

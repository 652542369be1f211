"""The docs keep their promises: the getting-started code runs, and every relative link resolves.

``test_getting_started_runs`` executes every ```python block of docs/getting_started.md, in
order, in one namespace, in a temporary working directory (the page says they run as they
stand). Each block is compiled under the file name ``docs/getting_started.md`` with its real
line numbers, so a traceback points at the line of the page that failed, and the failure
message names the block.

``test_relative_link_resolves`` checks every Markdown link of README.md and docs/*.md that is
not a URL or an anchor: the target must exist, and be tracked by git when this is a git
checkout (a fresh clone has only what was committed).
"""
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GETTING_STARTED = ROOT / "docs" / "getting_started.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_blocks(path):
    """[(first line number of the code, code)] of every ```python block of `path`."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) == "python":
            first_line = text.count("\n", 0, match.start(2)) + 1
            blocks.append((first_line, match.group(2)))
    return blocks


def test_getting_started_runs(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NNSCRATCH_PROGRESS", "0")
    blocks = python_blocks(GETTING_STARTED)
    assert len(blocks) >= 6, f"expected the page's code blocks, found {len(blocks)}"
    namespace = {"__name__": "getting_started"}
    try:
        for number, (line, code) in enumerate(blocks, start=1):
            # pad with newlines so the compiled code carries the page's own line numbers
            compiled = compile("\n" * (line - 1) + code, str(GETTING_STARTED.relative_to(ROOT)), "exec")
            try:
                exec(compiled, namespace)
            except Exception as exc:
                raise AssertionError(
                    f"docs/getting_started.md: python block {number} of {len(blocks)} (starting at line {line}) "
                    f"failed with {type(exc).__name__}: {exc}"
                ) from exc
    finally:
        plt.close("all")
    # what the page's blocks leave behind, checked so a block that silently does nothing fails
    for name in ("first_net.safetensors", "run.ckpt", "history.png", "confusion.png", "mistakes.png",
                 "conv1_filters.png"):
        assert (tmp_path / name).is_file(), f"the getting-started blocks should have written {name}"
    assert namespace["result"]["accuracy"] > 0.5, "the first network should learn something in one epoch"
    assert namespace["features"].shape == (100, 8 * 13 * 13)


def relative_links():
    links = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))  # code blocks hold no links
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
                continue  # a URL, mailto:, or an anchor in the same page
            links.append((page.relative_to(ROOT).as_posix(), target))
    return links


def tracked_files():
    """Paths git tracks (posix, relative to ROOT), or None when this is not a git checkout."""
    if not (ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return set(out.decode("utf-8").split("\0")) - {""}


def _link_param(page, target):
    resolved = os.path.normpath((ROOT / page).parent.joinpath(target.split("#")[0]))
    relative = pathlib.Path(resolved).relative_to(ROOT).as_posix() if resolved.startswith(str(ROOT)) else resolved
    return pytest.param(page, target, relative, id=f"{page}->{target}")


@pytest.mark.parametrize("page, target, relative", [_link_param(p, t) for p, t in relative_links()])
def test_relative_link_resolves(page, target, relative):
    path = ROOT / relative
    assert path.exists(), f"{page}: the link ({target}) points to {relative}, which does not exist"
    tracked = tracked_files()
    if tracked is not None:
        committed = relative in tracked or any(name.startswith(relative.rstrip("/") + "/") for name in tracked)
        assert committed, f"{page}: the link ({target}) points to {relative}, which exists but is not committed"


def test_pages_have_links_to_check():
    # guards the link test against a regex that silently matches nothing
    assert any(page == "docs/getting_started.md" for page, _ in relative_links())

"""The README's two commands are the ones a newcomer runs, and CI runs exactly the second."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_the_two_commands():
    after_title = (ROOT / "README.md").read_text(encoding="utf-8").split("\n", 1)[1]
    assert after_title.lstrip().startswith("```bash"), "the README must open with the commands"
    install_and_run, install_and_test = readme_commands()
    assert install_and_run == "python -m pip install -e . && python examples/mnist_transfer.py"
    assert install_and_test.endswith("python -m pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert readme_commands()[1] in ci

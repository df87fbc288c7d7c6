"""The README's promises about itself: its test command is what CI runs, and it points at
nothing outside the repository."""

import re

from tests.helpers import ROOT


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [l for l in block.splitlines() if l and not l.startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_train, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
    assert install_and_train.startswith("pip install . && charlm train data/tinyshakespeare.txt")


def test_readme_points_at_nothing_outside_the_repository():
    text = (ROOT / "README.md").read_text()
    assert "../" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):  # markdown links and images
        assert (ROOT / target).exists(), target

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


DOCS = sorted((ROOT / "docs").glob("*.md"))
DIARY = re.compile(r"\b(20\d\d-\d\d-\d\d|today|yesterday|this session|issue #?\d+)\b", re.I)


def test_docs_link_only_to_what_exists():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_docs_readme_and_configs_are_a_reference_not_a_diary():
    """No dates, sessions or issue numbers: history lives in git."""
    texts = [*DOCS, ROOT / "README.md", *sorted((ROOT / "configs").glob("*.yaml"))]
    found = [f"{p.name}:{i}: {m.group(0)}" for p in texts for i, line in enumerate(p.read_text().splitlines(), 1)
             for m in DIARY.finditer(line)]
    assert not found, found


def test_readme_and_performance_stay_short():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    results = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in results.splitlines() if l.startswith("|")][2:]  # after the header and its rule
    assert 0 < len(rows) <= 6
    assert len((ROOT / "docs" / "performance.md").read_text().splitlines()) <= 400

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


def test_the_readmes_examples_print_what_it_says(tmp_path):
    """The served completion (curl), the openai client's stream and echoed log-probabilities,
    the ONNX file in onnxruntime and the library's lines, run as written (the server's address
    is the one it printed): each prints what the README shows beside it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading
    import urllib.request

    from tests.helpers import CHARLM

    readme = (ROOT / "README.md").read_text()
    body, shown = re.search(r"-d '(\{.*?\})'\n(\{.*\})\n", readme).groups()
    client_code, onnx_code, library_code = re.findall(r"```python\n(.*?)```", readme, re.S)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

    def python(code, cwd):
        r = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def number_in_comment(code):
        return float(re.findall(r"# (-?\d+\.\d+)", code)[-1])

    server = subprocess.Popen([CHARLM, "serve", "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = iter(server.stderr.readline, "")
        url = next(m.group(1) for line in lines if (m := re.match(r"serving .* at (http://\S+): the OpenAI API", line)))
        threading.Thread(target=server.stderr.read, daemon=True).start()  # the access log
        req = urllib.request.Request(url + "/v1/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        got, want = json.loads(urllib.request.urlopen(req, timeout=60).read()), json.loads(shown)
        assert (got["choices"], got["usage"], got["model"]) == (want["choices"], want["usage"], want["model"])
        streamed, total = python(client_code.replace("http://127.0.0.1:8000", url), tmp_path).rsplit("\n", 2)[:2]
        assert streamed == want["choices"][0]["text"]
        assert abs(float(total) - number_in_comment(client_code)) < 1e-4
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)

    exported = subprocess.run([CHARLM, "export", "bundled", "-o", "model.onnx"], cwd=tmp_path, capture_output=True,
                              text=True, env=env)
    assert exported.returncode == 0, exported.stderr
    assert abs(float(python(onnx_code, tmp_path)) - number_in_comment(onnx_code)) < 1e-4

    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    sampled, bits = python(library_code, tmp_path)[:-1].rsplit("\n", 1)
    assert len(sampled) == 200 and 0 < float(bits) < 10  # 200 characters after the prime; bits per character

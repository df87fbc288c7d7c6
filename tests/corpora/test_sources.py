"""Corpora the way people keep them: several paths, directory trees with binary files, hidden
folders, links and filters (charlm/text/sources.py, charlm/text/corpus.py)."""

import json
import os
from pathlib import Path

import pytest

import charlm.text.corpus as data
from charlm.errors import CorpusError
from charlm.text.corpus import load_corpus, read_text
from charlm.text.sources import CorpusSource, list_files

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def tree(root, files):
    for name, content in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return root


@pytest.fixture
def src(tmp_path, monkeypatch):
    """A small source tree, read from its parent so that names are short."""
    monkeypatch.chdir(tmp_path)
    return tree(tmp_path / "src", {
        "pkg/__init__.py": "from .mod import f\n",
        "pkg/mod.py": "def f():\n    return 1\n",
        "pkg/logo.png": PNG,
        "pkg/latin.txt": "caf\xe9\n".encode("latin-1"),
        "pkg/empty.py": "",
        "README.md": "# src\n",
        "tests/test_mod.py": "def test_f():\n    assert f() == 1",
        ".git/config": "[core]\n",
        ".hidden.py": "x = 1\n",
    })


def test_a_tree_reads_its_text_files_in_order_and_says_what_it_skipped(src):
    c = load_corpus("src")
    assert c.vocab.decode(c.ids) == ("# src\n" "from .mod import f\n" "def f():\n    return 1\n"
                                     "def test_f():\n    assert f() == 1")
    assert c.fingerprint["files"] == 4
    assert c.summary == ("corpus: read 4 files (80 bytes) from src; skipped 5 (hidden 2, empty 1, not UTF-8 1, "
                         "binary 1: .git, .hidden.py, pkg/empty.py, ...)")


def test_include_and_exclude_filter_the_relative_path(src):
    only_py = load_corpus(CorpusSource(("src",), include=("*.py",)))
    assert only_py.fingerprint["files"] == 3  # *.py crosses directories; the empty one is skipped
    assert "# src" not in only_py.vocab.decode(only_py.ids)
    tree(src, {"tests/.cache/x.py": "y = 2\n"})  # inside an excluded directory: not even listed as hidden
    no_tests = load_corpus(CorpusSource(("src",), include=("*.py",), exclude=("tests/*",)))
    assert no_tests.vocab.decode(no_tests.ids) == "from .mod import f\ndef f():\n    return 1\n"
    assert no_tests.summary.startswith("corpus: read 2 files (41 bytes) from src --include *.py --exclude tests/*;")
    assert "tests/" not in no_tests.summary.split(";")[1]


def test_several_paths_keep_their_order_and_files_are_joined_by_a_newline(tmp_path):
    a = tree(tmp_path, {"a.txt": "one", "b.txt": "two\n", "c.txt": "three"})
    c = load_corpus([a / "c.txt", a / "a.txt", a / "b.txt"])
    assert c.vocab.decode(c.ids) == "three\none\ntwo\n"
    assert read_text([a / "c.txt", a / "a.txt", a / "b.txt"]) == "three\none\ntwo\n"  # the novelty check's text


def test_the_fingerprint_covers_the_file_list_and_the_contents(tmp_path):
    d = tree(tmp_path / "d", {"a.txt": "hello\n", "b.txt": "world\n"})
    first = load_corpus(d).fingerprint
    os.rename(d / "b.txt", d / "c.txt")  # same text, same order, another name
    renamed = load_corpus(d).fingerprint
    (d / "c.txt").write_text("worle\n")
    changed = load_corpus(d).fingerprint
    assert first["chars"] == renamed["chars"] == changed["chars"]
    assert len({first["sha256"], renamed["sha256"], changed["sha256"]}) == 3
    single = tree(tmp_path, {"one.txt": "hello\n"}) / "one.txt"
    import hashlib

    assert load_corpus(single).fingerprint["sha256"] == hashlib.sha256(b"hello\n").hexdigest()  # as before


def test_a_symlink_loop_is_read_once(tmp_path):
    d = tree(tmp_path / "d", {"a.txt": "hello\n", "sub/b.txt": "world\n"})
    os.symlink("..", d / "sub" / "up")
    os.symlink("sub", d / "same")
    c = load_corpus(d)
    assert c.vocab.decode(c.ids) == "hello\nworld\n"
    assert c.summary.endswith("skipped 2 (read already 2: same/up, sub)")  # the loop, and sub seen as same


def test_broken_links_fifos_and_unreadable_files_are_skipped(tmp_path, monkeypatch):
    d = tree(tmp_path / "d", {"a.txt": "hello\n", "locked.txt": "secret\n"})
    os.symlink("nowhere", d / "broken.txt")
    os.mkfifo(d / "pipe")  # opening it would block forever
    real_open = data.open_to_read

    def fake_open(path, *a, **k):  # root reads any file whatever its mode: deny this one by hand
        if str(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(data, "open_to_read", fake_open)
    c = load_corpus(d)
    assert c.vocab.decode(c.ids) == "hello\n"
    for kind in ("broken symbolic link 1", "FIFO 1", "unreadable 1"):
        assert kind in c.summary
    with pytest.raises(CorpusError, match="locked.txt: cannot read: Permission denied"):
        load_corpus(d / "locked.txt")  # a file named on the command line is an error instead


def test_a_named_file_is_read_whatever_its_name_and_filters_do_not_apply(tmp_path):
    f = tree(tmp_path, {"notes.md": "# notes\n"}) / "notes.md"
    c = load_corpus(CorpusSource((str(f),), include=("*.txt",)))
    assert c.vocab.decode(c.ids) == "# notes\n" and c.summary == ""


def test_listing_is_stable_whatever_the_directory_order(tmp_path):
    d = tree(tmp_path / "d", {name: "x\n" for name in ("b/z.txt", "a.txt", "b.txt", "a/y.txt", "B.txt")})
    assert [m.name for m in list_files(CorpusSource((str(d),))).members] == \
        ["B.txt", "a.txt", "a/y.txt", "b.txt", "b/z.txt"]


def test_train_on_a_source_tree_with_include(src):
    from click.testing import CliRunner

    from charlm.cli import main
    from tests.helpers import tiny_overrides

    tree(src, {f"pkg/gen{i}.py": f"def g{i}(x):\n    return x * {i}\n" * 20 for i in range(5)})
    sets = [a for kv in tiny_overrides(**{"train.max_steps": 4, "data.val_fraction": 0.2}) for a in ("--set", kv)]
    r = CliRunner().invoke(main, ["train", "src", "--include", "*.py", "--exclude", "tests/*", *sets,
                                  "--out", "run", "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", "run", "-o", "report.html"])  # finds the run's files again
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "src/", "--include", "*.py", "--exclude", "tests/*", *sets,
                                  "--out", "run2", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "corpus: read 7 files (" in r.output and "from src/ --include *.py --exclude tests/*; skipped 3 " \
        "(hidden 2, empty 1: .git, .hidden.py, pkg/empty.py)" in r.output
    r = CliRunner().invoke(main, ["baseline", "src", "src/README.md", "--include", "*.py", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["train_chars"] > 1000


# ---- odd trees: every odd member skipped and counted by kind, the rest trains, no traceback ----

def test_links_to_devices_fifos_sockets_and_link_loops_are_skipped_by_kind(tmp_path):
    import socket

    d = tree(tmp_path / "d", {"a.txt": "hello\n"})
    os.symlink("/dev/null", d / "null.txt")
    os.symlink("/dev/zero", d / "zero.txt")  # read as a file, it would never end
    os.mkfifo(d / "pipe.txt")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock.txt"))
    os.symlink("loop2.txt", d / "loop1.txt")
    os.symlink("loop1.txt", d / "loop2.txt")
    try:
        c = load_corpus(d)
    finally:
        s.close()
    assert c.vocab.decode(c.ids) == "hello\n"
    for kind in ("device 2", "FIFO 1", "socket 1", "link loop 2"):
        assert kind in c.summary, c.summary


def test_a_tree_deeper_than_the_recursion_limit_and_than_a_path_can_be(tmp_path):
    """1,500 levels (deeper than Python's recursion limit) are read; beyond PATH_MAX is skipped."""
    import sys

    d = tmp_path / "d"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY)
    try:
        for level in range(2600):  # ~5,200 characters of path: more than PATH_MAX (4,096)
            os.mkdir("n", dir_fd=fd)
            sub = os.open("n", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = sub
            if level == 1500:
                with open(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
                    f.write("deep\n")
        with open(os.open("deepest.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("deepest\n")
    finally:
        os.close(fd)
    tree(d, {"top.txt": "top\n"})
    assert sys.getrecursionlimit() < 1500
    try:
        c = load_corpus(d)
        assert c.vocab.decode(c.ids) == "deep\ntop\n"
        assert "path too long" in c.summary, c.summary
    finally:
        remove_chain(d, "n")


def remove_chain(d, link):
    """Delete a chain of directories ``d/link/link/...`` deeper than rmtree's recursion can go."""
    fds = [os.open(d, os.O_RDONLY)]
    try:
        while link in os.listdir(fds[-1]):
            fds.append(os.open(link, os.O_RDONLY, dir_fd=fds[-1]))
        while len(fds) > 1:
            for name in os.listdir(fds[-1]):
                os.unlink(name, dir_fd=fds[-1])
            os.close(fds.pop())
            os.rmdir(link, dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)


def test_a_huge_number_of_files(tmp_path):
    d = tmp_path / "d"
    for i in range(40):
        sub = d / f"s{i:02d}"
        sub.mkdir(parents=True)
        for j in range(150):
            (sub / f"f{j:03d}.txt").write_text(f"{i} {j}\n")
        (sub / "x.bin").write_bytes(b"\0\1")
    c = load_corpus(d)
    assert c.fingerprint["files"] == 6000 and "skipped 40 (binary 40:" in c.summary
    assert c.vocab.decode(c.ids).startswith("0 0\n0 1\n")


# ---- the same file reached twice is read once --------------------------------------------------

@pytest.mark.parametrize("how", ["named twice", "named beside its directory", "a link in the tree",
                                 "a hard link", "directory named twice"])
def test_the_same_file_reached_twice_is_read_once_and_the_summary_says_so(tmp_path, how):
    """Read twice, the last copy would be the validation split: text the model trained on."""
    d = tree(tmp_path / "d", {"a.txt": "alpha\n", "b.txt": "beta\n"})
    paths = {"named twice": [d / "a.txt", d / "b.txt", d / "a.txt"],
             "named beside its directory": [d, d / "b.txt"],
             "a link in the tree": [d],
             "a hard link": [d],
             "directory named twice": [d, d]}[how]
    if how == "a link in the tree":
        os.symlink("a.txt", d / "c.txt")
    if how == "a hard link":
        os.link(d / "a.txt", d / "c.txt")
    c = load_corpus(paths)
    assert sorted(c.vocab.decode(c.ids).splitlines()) == ["alpha", "beta"]
    assert c.fingerprint["files"] == 2
    assert "read already" in c.summary, c.summary


def test_patterns_that_leave_nothing_name_the_patterns_and_what_they_excluded(src):
    with pytest.raises(CorpusError) as e:
        load_corpus(CorpusSource(("src",), include=("*.rs",), exclude=("docs/*",)))
    message = str(e.value)
    assert "--include *.rs" in message and "--exclude docs/*" in message, message
    assert "excluded 7 files" in message and "README.md" in message, message
    assert "\n" not in message


def test_a_file_whose_read_would_block_is_skipped_not_waited_for(tmp_path):
    """/proc/kmsg looks like an empty regular file; reading it waits for the kernel's next
    message. Linked into a corpus it is skipped (in a child process, so a hang fails the test)."""
    import subprocess
    import sys

    if not os.access("/proc/kmsg", os.R_OK):
        if os.environ.get("CI") == "true":  # CI runs as root, where it is readable
            pytest.fail("CI=true but /proc/kmsg is not readable (only root reads it)")
        pytest.skip("/proc/kmsg is not readable here (only root reads it)")
    d = tree(tmp_path / "d", {"a.txt": "hello\n"})
    os.symlink("/proc/kmsg", d / "kmsg")
    code = f"from charlm.text.corpus import load_corpus; c = load_corpus({str(d)!r}, cache=False); print(c.summary)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "unreadable 1" in r.stdout, r.stdout + r.stderr


def test_names_with_newlines_and_bytes_that_are_not_utf8_are_shown_escaped(tmp_path):
    d = tree(tmp_path / "d", {"a.txt": "hello\n"})
    (d / "x\nError: your disk is on fire.bin").write_bytes(b"\0\1")
    os.mkdir(os.fsencode(d) + b"/\xff")  # a directory whose name is not UTF-8, holding a binary file
    (Path(os.fsdecode(os.fsencode(d) + b"/\xff")) / "y.bin").write_bytes(b"\0")
    c = load_corpus(d)
    assert "\n" not in c.summary and "x\\nError" in c.summary and "\\udcff/y.bin" in c.summary


def test_a_long_missing_path_is_echoed_short(tmp_path):
    with pytest.raises(CorpusError) as e:
        load_corpus(str(tmp_path / "/".join(["q" * 200] * 15) / "notes.txt"))
    assert len(str(e.value)) < 260 and str(e.value).endswith("notes.txt: no such file or directory")

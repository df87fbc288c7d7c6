"""``charlm plot``: a PNG of every run's curves, what it shows, and without matplotlib."""

import subprocess
import sys

from tests.helpers import SETS, charlm, one_error_line


# ---- charlm plot ------------------------------------------------------------------------
def test_plot_writes_a_png_of_every_run(run_dir, corpus, tmp_path):
    other = tmp_path / "other"
    assert charlm("train", corpus, "--out", other, "-q", *SETS, "--set", "train.lr=0.003").returncode == 0
    out = tmp_path / "loss.png"
    r = charlm("plot", run_dir, other, "-o", out)
    assert r.returncode == 0 and f"wrote {out}" in r.stdout, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "no metrics.jsonl" in one_error_line(charlm("plot", tmp_path, "-o", tmp_path / "x.png"))


def test_plot_shows_the_metrics(run_dir):
    from charlm.see.plot import figure, read_run

    run = read_run(run_dir)
    fig = figure([run])
    by_step, by_minute, lr = fig.axes[:3]
    val, train = by_step.lines
    assert list(val.get_xdata()) == [10, 20, 30] and list(val.get_ydata()) == [r["val_loss"] for r in run.records]
    assert val.get_label() == "run validation" and train.get_linestyle() == "--"
    assert list(by_minute.lines[0].get_xdata()) == [r["elapsed_s"] / 60 for r in run.records]
    assert list(lr.lines[0].get_ydata()) == [r["lr"] for r in run.records]
    assert by_step.get_ylabel() == "nats per character"
    assert [a.get_ylabel() for a in by_step.child_axes] == ["bits per character"]


def test_plot_without_matplotlib_says_how_to_install(run_dir, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.figure'] = None; "
            "from charlm.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "plot", str(run_dir), "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=60)
    assert "Error: charlm plot needs matplotlib: pip install 'charlm[plot]'" in r.stderr and r.returncode == 1
    assert "Traceback" not in r.stderr

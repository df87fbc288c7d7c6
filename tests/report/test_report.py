"""charlm report: the numbers behind the page, and the page itself in a real headless
Chromium (Debian's, driven by playwright): it loads offline without errors, draws its charts
and text, and the unit explorer recolours the text when another unit is chosen."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm.config import ModelConfig, load_config
from charlm.network.model import Model
from charlm.see.introspect import _last_step_state_grads, correlations, features, gradient_flow
from charlm.see.report import render, report_data
from charlm.training.trainer import train
from tests.helpers import numeric_grad, rel_err, watched


def test_features_of_a_known_text():
    f = features('AB:\nhi, (x) "q".\n')
    assert list(f["position in the line"][:6]) == [0, 1, 2, 3, 0, 1]
    assert list(f["start of a line"][:6]) == [1, 0, 0, 0, 1, 0]
    assert list(f["upper-case speaker name"][:4]) == [1, 1, 1, 0] and f["upper-case speaker name"][4] == 0
    assert f["inside quotes or brackets"][8] == 1 and f["inside quotes or brackets"][6] == 0  # 'x' vs 'h'
    assert f["after punctuation"][7] == 1  # the space after ','


def test_correlations_find_the_unit_that_is_the_feature():
    rng = np.random.default_rng(0)
    f = {"position in the line": np.arange(200) % 17.0, "constant": np.zeros(200)}
    a = rng.normal(size=(200, 8))
    a[:, 5] = -0.5 * f["position in the line"] + rng.normal(0, 0.01, 200)
    rows = correlations({"l0/h": a}, f, top=2)
    assert [r["feature"] for r in rows] == ["position in the line"] * 2  # the constant feature is left out
    assert rows[0]["index"] == 5 and rows[0]["r"] < -0.999


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_last_step_state_gradients_match_finite_differences(kind):
    m = Model(ModelConfig(type=kind, hidden_size=5, num_layers=2, dtype="float64"), 7)
    m.init(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 7, (4, 3)), rng.integers(0, 7, 3)
    state = [tuple(rng.normal(0, 0.5, (5, 3)) for _ in s) for s in m.zero_state(3)]

    def loss():
        logits, _ = m.forward(x, state)
        z = logits[:, -3:].astype(np.float64)  # the last step's columns
        z -= z.max(axis=0)
        return float(-(z[y, np.arange(3)] - np.log(np.exp(z).sum(axis=0))).mean())

    grads = _last_step_state_grads(m, x, y, state)
    for l in range(2):
        for g, s in zip(grads[l], state[l]):
            assert rel_err(g, numeric_grad(loss, s)) < 1e-6


def test_gradient_flow_of_an_untrained_rnn_vanishes():
    m = Model(ModelConfig(type="rnn", hidden_size=16, num_layers=1, dtype="float64"), 5)
    m.init(np.random.default_rng(0))
    m.params["l0/Wh"][...] *= 0.5  # a contracting recurrence: the textbook vanishing gradient
    ids = np.random.default_rng(1).integers(0, 5, 400)
    g = gradient_flow(m, ids, K=20, streams=8)
    assert g["k"] == list(range(1, 21)) and g["l0/h"][-1] < 1e-3 * g["l0/h"][0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    corpus = d / "corpus.txt"
    lines = [f"SPEAKER {i % 3}:\nhello there, (friend) \"hero\" of the hole {i}.\n" for i in range(250)]
    corpus.write_text("".join(lines), encoding="utf-8")
    cfg = load_config(None, ["model.type=lstm", "model.hidden_size=16", "model.num_layers=2", "data.batch_size=8",
                             "data.seq_length=32", "train.max_steps=60", "train.eval_every=20", "train.lr=0.01",
                             "train.sample_length=40"])
    train(cfg, corpus, d / "run")
    return d / "run"


def test_report_data(run):
    d = report_data(run, chars=400)
    assert len(d["text"]) == 400 and len(d["chars"]) == 400
    assert set(d["units"]) == {"l0/h", "l0/c", "l1/h", "l1/c"} and d["units"]["l0/c"]["H"] == 16
    assert [m["step"] for m in d["metrics"]] == [20, 40, 60] and len(d["samples"]) == 3
    assert {r["feature"] for r in d["correlations"]} >= {"position in the line", "start of a line"}
    assert len(d["gradient_flow"]["k"]) == len(d["gradient_flow"]["l1/c"])
    page = render(d)
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<script src" not in page and "<link" not in page  # everything inline


def test_report_command_and_its_page_in_chromium(run, tmp_path, browser):
    out = tmp_path / "report.html"
    charlm = Path(sys.executable).parent / "charlm"
    r = subprocess.run([str(charlm), "report", str(run), "-o", str(out), "--chars", "400"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and f"wrote {out}" in r.stdout, r.stderr
    data = json.loads(out.read_text().split('<script id="data" type="application/json">')[1].split("</script>")[0])
    best = data["correlations"][0]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors, requests = watched(page)
    page.goto(out.as_uri())
    page.wait_for_selector("#unit-text span")
    assert errors == [] and [u for u in requests if not u.startswith("file:")] == []
    # the charts: two loss lines, one gradient line per layer and state
    assert page.locator("#loss-chart polyline").count() == 2
    assert page.locator("#flow-chart polyline").count() == 4
    assert page.locator("#loss-chart polyline").first.get_attribute("points").count(",") == 3
    # the explained text: one span per character, hover text with the top guesses
    spans = page.locator("#explained span")
    assert spans.count() == 400 and "top guesses" in spans.nth(5).get_attribute("title")
    spans.nth(5).hover()
    assert "bits, rank" in page.locator("#explain-status").inner_text()
    assert page.locator("#explain-total").inner_text().endswith("bits/char over 400 characters")
    # the unit explorer starts on the best-correlated unit, whose r the table shows
    assert page.locator("#unit-layer").input_value() == best["unit"]
    assert page.locator("#unit-index").input_value() == str(best["index"])
    first_row = page.locator("#correlations tbody tr").first.inner_text()
    assert best["feature"] in first_row and f"{best['r']:.3f}" in first_row
    pos_rows = page.locator("#correlations tbody tr", has_text="position in the line")
    assert pos_rows.count() >= 1
    before = [page.locator("#unit-text span").nth(i).get_attribute("style") for i in range(60)]
    page.locator("#unit-index").fill(str((best["index"] + 1) % 16))
    page.locator("#unit-index").dispatch_event("input")
    after = [page.locator("#unit-text span").nth(i).get_attribute("style") for i in range(60)]
    assert after != before and page.locator("#unit-text span").count() == 400
    page.locator("#unit-layer").select_option("l1/h")
    assert page.locator("#unit-label").inner_text().startswith("l1/h unit")
    pos_rows.first.click()
    assert "position in the line" in page.locator("#correlations tr.selected").inner_text()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()
    assert (tmp_path / "report.png").stat().st_size > 50_000

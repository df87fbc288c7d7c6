// Draws the charlm report from the JSON in <script id="data">: SVG charts, the explained text,
// the hidden-unit explorer. No libraries, no network.
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

// series: [{name, points: [[x, y], ...]}]; logY draws log10(y).
function lineChart(svg, series, opts) {
  const W = 640, H = 300, L = 60, R = 150, T = 12, B = 36;
  const tf = opts.logY ? (y) => Math.log10(y) : (y) => y;
  const pts = series.flatMap((s) => s.points).filter((p) => p[1] !== null && (!opts.logY || p[1] > 0));
  if (!pts.length) return;
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => tf(p[1]))), Math.max(...pts.map((p) => tf(p[1])))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((tf(y) - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, y = H - B - ((H - T - B) * i) / 4;
    el("line", { x1: L, x2: W - R, y1: y, y2: y, class: "grid" }, svg);
    const label = el("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, svg);
    label.textContent = opts.logY ? Math.pow(10, yv).toExponential(0) : yv.toFixed(2);
    const xv = x0 + ((x1 - x0) * i) / 4, x = sx(xv);
    const xl = el("text", { x: x, y: H - B + 16, "text-anchor": "middle" }, svg);
    xl.textContent = Math.round(xv).toLocaleString();
  }
  el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }, svg);
  el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }, svg);
  el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, svg).textContent = opts.xLabel;
  el("text", { x: 12, y: (T + H - B) / 2, transform: `rotate(-90 12 ${(T + H - B) / 2})`, "text-anchor": "middle" }, svg)
    .textContent = opts.yLabel;
  series.forEach((s, i) => {
    const p = s.points.filter((q) => q[1] !== null && (!opts.logY || q[1] > 0));
    el("polyline", { points: p.map((q) => `${sx(q[0]).toFixed(1)},${sy(q[1]).toFixed(1)}`).join(" "),
                     stroke: COLORS[i % COLORS.length], "data-series": s.name }, svg);
    el("rect", { x: W - R + 12, y: T + 8 + i * 18, width: 12, height: 3, fill: COLORS[i % COLORS.length] }, svg);
    el("text", { x: W - R + 30, y: T + 13 + i * 18 }, svg).textContent = s.name;
  });
}

function summary() {
  document.getElementById("title").textContent = `charlm report: ${D.name}`;
  const best = D.best_val === null ? "-" : `${D.best_val.toFixed(4)} nats/char (${(D.best_val / Math.LN2).toFixed(3)} bits)`;
  document.getElementById("summary").textContent =
    `${D.model}, step ${D.step}, best validation ${best}; checkpoint ${D.checkpoint}` +
    (D.mixture ? `; ${D.mixture}` : "") + (D.lineage ? `; ${D.lineage}` : "");
}

function lossChart() {
  const val = D.metrics.map((r) => [r.step, r.val_loss]);
  const train = D.metrics.filter((r) => r.train_loss !== null).map((r) => [r.step, r.train_loss]);
  lineChart(document.getElementById("loss-chart"),
            [{ name: "validation", points: val }, { name: "training", points: train }],
            { xLabel: "step", yLabel: "nats per character" });
  const ol = document.getElementById("samples");
  if (!D.samples.length) ol.outerHTML = "<p class='note'>This run has no samples.jsonl (train.sample_length was 0, or it predates it).</p>";
  for (const s of D.samples) {
    const li = document.createElement("li");
    li.textContent = `step ${s.step}: ${s.text}`;
    ol.appendChild(li);
  }
}

function shown(c) { return c === "\n" ? "\\n" : c === " " ? "space" : c; }

function explained() {
  const box = document.getElementById("explained"), status = document.getElementById("explain-status");
  document.getElementById("explain-total").textContent = D.explain_total;
  [...D.text].forEach((ch, i) => {
    const [bits, rank, top] = D.chars[i];
    const span = document.createElement("span");
    span.textContent = ch;
    const hue = Math.max(0, 120 - (bits / 6) * 120);  // 0 bits green ... 6+ bits red
    span.style.background = `hsla(${hue}, 85%, 55%, 0.45)`;
    const guesses = top.map(([c, p]) => `${shown(c)} ${p.toFixed(2)}`).join(", ");
    span.title = `${shown(ch)}: ${bits.toFixed(2)} bits, rank ${rank}; top guesses ${guesses}`;
    span.dataset.bits = bits.toFixed(3);
    span.addEventListener("mouseover", () => { status.textContent = span.title; });
    box.appendChild(span);
  });
}

const UNITS = {};
function decodeUnits() {
  for (const [key, u] of Object.entries(D.units)) {
    const bytes = Uint8Array.from(atob(u.data), (c) => c.charCodeAt(0));
    UNITS[key] = { values: new Int8Array(bytes.buffer), H: u.H, scale: u.scale };
  }
}

function showUnit(key, index) {
  const u = UNITS[key], box = document.getElementById("unit-text");
  index = Math.max(0, Math.min(u.H - 1, index | 0));
  document.getElementById("unit-layer").value = key;
  document.getElementById("unit-index").value = index;
  document.getElementById("unit-label").textContent = `${key} unit ${index} (max |activation| ${u.scale[index].toFixed(2)})`;
  box.textContent = "";
  [...D.text].forEach((ch, t) => {
    const v = u.values[t * u.H + index] / 127;
    const span = document.createElement("span");
    span.textContent = ch;
    span.style.background = v >= 0 ? `rgba(220, 40, 40, ${Math.abs(v).toFixed(3)})` : `rgba(40, 80, 220, ${Math.abs(v).toFixed(3)})`;
    span.dataset.v = v.toFixed(3);
    box.appendChild(span);
  });
}

function unitExplorer() {
  decodeUnits();
  const layer = document.getElementById("unit-layer"), index = document.getElementById("unit-index");
  for (const key of Object.keys(UNITS)) {
    const o = document.createElement("option");
    o.value = o.textContent = key;
    layer.appendChild(o);
  }
  layer.addEventListener("change", () => showUnit(layer.value, +index.value));
  index.addEventListener("input", () => showUnit(layer.value, +index.value));
  const body = document.querySelector("#correlations tbody");
  D.correlations.forEach((row) => {
    const tr = document.createElement("tr");
    for (const v of [row.feature, `${row.unit} unit ${row.index}`, row.r.toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => {
      body.querySelectorAll("tr").forEach((r) => r.classList.remove("selected"));
      tr.classList.add("selected");
      showUnit(row.unit, row.index);
    });
    body.appendChild(tr);
  });
  const first = D.correlations[0];
  if (first) showUnit(first.unit, first.index); else showUnit(Object.keys(UNITS)[0], 0);
}

function flowChart() {
  const g = D.gradient_flow;
  const series = Object.keys(g).filter((k) => k !== "k").map((k) => ({ name: k, points: g.k.map((x, i) => [x, g[k][i]]) }));
  lineChart(document.getElementById("flow-chart"), series, { xLabel: "steps back (k)", yLabel: "gradient norm", logY: true });
}

summary();
lossChart();
explained();
unitExplorer();
flowChart();

// The exported page: sample and score with the network in cells.js, offline. Its address says
// what to do, so a link can be shared: #prime=ROMEO:&temperature=0.8[&top_p=0.9&length=500&seed=1]
// starts a sample; #score=TEXT shows TEXT's bits per character, as charlm score --network-only
// TEXT prints it (the text is read after a newline, charlm score's default context).
"use strict";

const model = JSON.parse(document.getElementById("model").textContent);
const net = new CharNet(model.config, model.vocabulary.length, weights(model.tensors));
const ids = new Map(model.vocabulary.map((c, i) => [c, i]));
const $ = (id) => document.getElementById(id);
const SURPRISE = [[1, "low"], [3, "mid"], [6, "high"], [Infinity, "top"]];  // bits -> class, as score --explain
let running = 0;  // the sample being drawn; a new one stops the old

function weights(tensors) {
  const raw = atob(document.getElementById("weights").textContent.trim());
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const all = new Float32Array(bytes.buffer);  // little-endian float32, in storage order
  const out = {};
  for (const t of tensors) out[t.name] = all.subarray(t.offset, t.offset + t.size);
  return out;
}

function unknown(text) {
  const bad = [...new Set([...text].filter((c) => !ids.has(c)))];
  return bad.slice(0, 10).map((c) => `'${c}' (U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")})`);
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One draw from log p at a temperature, among the most likely characters whose probability
// reaches topP (sample.py's nucleus).
function draw(logProbs, temperature, topP, random) {
  const V = logProbs.length, w = new Float64Array(V);
  let top = -Infinity;
  for (let v = 0; v < V; v++) top = Math.max(top, logProbs[v] / temperature);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += (w[v] = Math.exp(logProbs[v] / temperature - top));
  if (topP < 1) {
    const order = [...w.keys()].sort((a, b) => w[b] - w[a]);
    let before = 0;
    for (const v of order) {
      if (before >= topP * sum) w[v] = 0;
      else before += w[v];
    }
    sum = before;
  }
  let u = random() * sum;
  for (let v = 0; v < V; v++) if ((u -= w[v]) < 0) return v;
  return V - 1;
}

function sample(prime, temperature, topP, length, seed) {
  const me = ++running;
  const out = $("sample"), err = $("sample-error");
  err.textContent = "";
  const bad = unknown(prime);
  if (!prime || bad.length) {
    err.textContent = prime ? `the prime has characters not in the model's vocabulary: ${bad.join(", ")}` : "give a prime";
    return;
  }
  const random = Number.isFinite(seed) ? mulberry32(seed) : Math.random;
  let state = net.zeroState();
  for (const c of prime.slice(0, -1)) state = net.step(ids.get(c), state).state;
  let x = ids.get(prime[prime.length - 1]), made = 0;
  out.textContent = "";
  out.appendChild(Object.assign(document.createElement("span"), { className: "prime", textContent: prime }));
  const text = out.appendChild(document.createElement("span"));
  $("sample-status").textContent = "sampling...";
  const tick = () => {
    if (me !== running) return;
    let piece = "";
    const until = performance.now() + 12;  // a slice of a frame, then the page draws what is new
    while (made < length && performance.now() < until) {
      const r = net.step(x, state);
      state = r.state;
      x = draw(r.logProbs, temperature, topP, random);
      piece += model.vocabulary[x];
      made++;
    }
    text.textContent += piece;
    $("sample-status").textContent = made < length ? `sampling... ${made} of ${length}` : `${made} characters`;
    if (made < length) setTimeout(tick, 0);
  };
  setTimeout(tick, 0);
}

function score(text) {
  const err = $("score-error"), chars = $("score-chars");
  err.textContent = $("bits-per-char").textContent = chars.textContent = "";
  const bad = unknown(text);
  if (!text || bad.length) {
    err.textContent = text ? `the text has characters not in the model's vocabulary: ${bad.join(", ")}` : "give a text";
    return null;
  }
  if (!ids.has("\n")) {  // charlm score reads a newline first: a model without one cannot score the same way
    err.textContent = "this model has no newline in its vocabulary to read before the text";
    return null;
  }
  let state = net.step(ids.get("\n"), net.zeroState()), total = 0;
  for (const c of text) {
    const bits = -state.logProbs[ids.get(c)] / Math.LN2;
    total += bits;
    const cls = SURPRISE.find(([lim]) => bits <= lim)[1];
    chars.appendChild(Object.assign(document.createElement("span"), {
      className: cls, textContent: c, title: `${bits.toFixed(2)} bits`,
    }));
    state = net.step(ids.get(c), state.state);
  }
  const bpc = total / text.length;
  $("bits-per-char").textContent = bpc.toFixed(4);
  return bpc;
}

function fromAddress() {
  const q = new URLSearchParams(location.hash.slice(1));
  if (q.has("score")) {
    $("score-text").value = q.get("score");
    score(q.get("score"));
  }
  if (q.has("prime") || q.has("temperature") || q.has("length")) {
    for (const [key, id] of [["prime", "prime"], ["temperature", "temperature"], ["top_p", "top-p"],
                             ["length", "length"], ["seed", "seed"]]) if (q.has(key)) $(id).value = q.get(key);
    startSample(false);
  }
}

function startSample(remember) {
  const prime = $("prime").value, t = Number($("temperature").value), p = Number($("top-p").value);
  const n = Math.max(0, Math.min(100000, Math.floor(Number($("length").value) || 0)));
  const seed = $("seed").value === "" ? NaN : Number($("seed").value);
  if (!(t > 0 && t <= 100) || !(p > 0 && p <= 1)) {
    $("sample-error").textContent = "temperature must be in (0, 100] and top-p in (0, 1]";
    return;
  }
  if (remember) {
    const q = new URLSearchParams({ prime, temperature: t, top_p: p, length: n });
    if (Number.isFinite(seed)) q.set("seed", seed);
    history.replaceState(null, "", "#" + q.toString());
  }
  sample(prime, t, p, n, seed);
}

$("generate").addEventListener("click", () => startSample(true));
$("score-button").addEventListener("click", () => {
  const text = $("score-text").value;
  history.replaceState(null, "", "#" + new URLSearchParams({ score: text }).toString());
  score(text);
});
window.addEventListener("hashchange", fromAddress);
fromAddress();

// charlm's cells in plain JavaScript, for a page that runs a model in the browser (charlm export
// -o page.html). One step of each cell, written as its NumPy file beside this one writes the
// equations, with the same names; inference only (no dropout).
//
// Shape letters: V vocabulary, H hidden, G gates x H. Weights are charlm's, row-major:
// Wx (G, D), Wh (G, H), b (G), head/W (V, H), head/b (V). Layer 0's input is one-hot, so
// Wx x_t is column x_t of Wx. A state is one Float64Array(H) per name ("h", and "c" for an LSTM)
// per layer.
"use strict";

const sigmoid = (v) => 1 / (1 + Math.exp(-v));
const relu = (v) => (v > 0 ? v : 0);

// pre (G) = Wx x + b + Wh h_prev: the layer's input x is an id (layer 0) or a Float64Array(D).
function preActivation(p, x, hPrev, G, H, D) {
  const pre = new Float64Array(G);
  for (let r = 0; r < G; r++) {
    let s = p.b[r];
    if (typeof x === "number") s += p.Wx[r * D + x];
    else for (let j = 0; j < D; j++) s += p.Wx[r * D + j] * x[j];
    if (hPrev !== null) for (let j = 0; j < H; j++) s += p.Wh[r * H + j] * hPrev[j];
    pre[r] = s;
  }
  return pre;
}

// cells/rnn.py: h_t = act(Wx x_t + Wh h_{t-1} + b)
function rnnStep(p, x, s, H, D, cfg) {
  const pre = preActivation(p, x, s.h, H, H, D);
  const act = cfg.activation === "relu" ? relu : Math.tanh;
  const h = new Float64Array(H);
  for (let k = 0; k < H; k++) h[k] = act(pre[k]);
  return { h };
}

// cells/lstm.py, gate order [o, i, f, g]:
//   o, i, f = sigmoid(.), g = tanh(.);  c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
function lstmStep(p, x, s, H, D) {
  const a = preActivation(p, x, s.h, 4 * H, H, D);
  const h = new Float64Array(H), c = new Float64Array(H);
  for (let k = 0; k < H; k++) {
    const o = sigmoid(a[k]), i = sigmoid(a[H + k]), f = sigmoid(a[2 * H + k]), g = Math.tanh(a[3 * H + k]);
    c[k] = f * s.c[k] + i * g;
    h[k] = o * Math.tanh(c[k]);
  }
  return { h, c };
}

// cells/gru.py, gate order [r, z, n] (reset after the recurrent product):
//   r, z = sigmoid(Wx x_t + b + Wh h_{t-1})[r, z];  hn = (Wh h_{t-1})[n] + bhn
//   n = tanh((Wx x_t + b)[n] + r * hn);  h_t = (1 - z) * n + z * h_{t-1}
function gruStep(p, x, s, H, D) {
  const xin = preActivation(p, x, null, 3 * H, H, D);  // Wx x_t + b
  const h = new Float64Array(H);
  for (let k = 0; k < H; k++) {
    let gr = 0, gz = 0, gn = 0;
    for (let j = 0; j < H; j++) {
      const hj = s.h[j];
      gr += p.Wh[k * H + j] * hj;
      gz += p.Wh[(H + k) * H + j] * hj;
      gn += p.Wh[(2 * H + k) * H + j] * hj;
    }
    const r = sigmoid(xin[k] + gr), z = sigmoid(xin[H + k] + gz);
    const n = Math.tanh(xin[2 * H + k] + r * (gn + p.bhn[k]));
    h[k] = (1 - z) * n + z * s.h[k];
  }
  return { h };
}

const STEPS = { rnn: rnnStep, lstm: lstmStep, gru: gruStep };
const STATE_NAMES = { rnn: ["h"], lstm: ["h", "c"], gru: ["h"] };

// model.py: L stacked layers and a linear head. params: name -> Float32Array.
class CharNet {
  constructor(config, vocabSize, params) {
    this.cfg = config.model;
    this.V = vocabSize;
    this.H = this.cfg.hidden_size;
    this.L = this.cfg.num_layers;
    this.layers = [];
    for (let l = 0; l < this.L; l++) {
      const pre = `l${l}/`, p = {};
      for (const name of Object.keys(params)) if (name.startsWith(pre)) p[name.slice(pre.length)] = params[name];
      this.layers.push(p);
    }
    this.headW = params["head/W"];
    this.headB = params["head/b"];
    this.stepCell = STEPS[this.cfg.type];
  }

  zeroState() {
    return this.layers.map(() => Object.fromEntries(STATE_NAMES[this.cfg.type].map((n) => [n, new Float64Array(this.H)])));
  }

  // One character in -> (log p of every next character (V), the next state).
  step(id, state) {
    let x = id;
    const next = [];
    for (let l = 0; l < this.L; l++) {
      const D = l === 0 ? this.V : this.H;
      const s = this.stepCell(this.layers[l], x, state[l], this.H, D, this.cfg);
      next.push(s);
      x = s.h;
    }
    const logits = new Float64Array(this.V);
    let top = -Infinity;
    for (let v = 0; v < this.V; v++) {
      let z = this.headB[v];
      for (let j = 0; j < this.H; j++) z += this.headW[v * this.H + j] * x[j];
      logits[v] = z;
      if (z > top) top = z;
    }
    let sum = 0;
    for (let v = 0; v < this.V; v++) sum += Math.exp(logits[v] - top);
    const lse = top + Math.log(sum);
    for (let v = 0; v < this.V; v++) logits[v] -= lse;  // log-softmax, as model.exp_shifted computes it
    return { logProbs: logits, state: next };
  }
}

if (typeof module !== "undefined") module.exports = { CharNet };

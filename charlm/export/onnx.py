"""A checkpoint's network as an ONNX graph (``charlm export CKPT -o model.onnx``, extra
``charlm[onnx]``), for onnxruntime and every other runtime that reads ONNX.

Shape letters: T time, B batch, V vocabulary, H hidden, L layers, G gates x H.

    inputs   ids       int64   (T, B)      character ids (the vocabulary below)
             h0        float32 (L, B, H)   the hidden state to start from (zeros: a fresh text)
             c0        float32 (L, B, H)   the LSTM's cell state (LSTM only)
    outputs  log_probs float32 (T, B, V)   log p(next character) after each input
             hT, cT    float32 (L, B, H)   the state after the last input: feed them back as
                                           h0, c0 to carry on where a call ended

The graph is ONNX's own recurrent operators, one per layer (LSTM, GRU with
linear_before_reset, RNN with Tanh or Relu), the first fed one-hot characters, then the head
and a LogSoftmax. charlm's fused gate rows are reordered into ONNX's: charlm [o, i, f, g] ->
ONNX LSTM [i, o, f, c]; charlm GRU [r, z, n] -> ONNX [z, r, h], with the GRU's recurrent
candidate bias bhn as ONNX's Rbh (the PyTorch variant: reset after the recurrent product).
Weights are float32 (a float64 model is rounded to it). Metadata properties: ``vocabulary``
(a JSON list of the characters, id order), ``config`` and ``lineage`` (JSON).

Not in the graph: the n-gram of a mixture (the network alone is exported; ``charlm score
--network-only`` scores what it scores).
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import CharlmError
from ..predict.checkpoint import Checkpoint

OPSET = 17
_ORDER = {"lstm": [1, 0, 2, 3], "gru": [1, 0, 2], "rnn": [0]}  # ONNX's gate blocks, as charlm's block indices


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CharlmError("export to .onnx needs the onnx package: pip install 'charlm[onnx]'") from None
    return onnx


def _blocks(a: np.ndarray, cell: str, H: int) -> np.ndarray:
    """charlm's gate row blocks of a (G, ...) array, in ONNX's order."""
    return np.concatenate([a[k * H : (k + 1) * H] for k in _ORDER[cell]])


def build(ck: Checkpoint):
    """The ``onnx.ModelProto`` of ``ck``'s network."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    m, V = ck.config.model, len(ck.vocab)
    L, H, cell = m.num_layers, m.hidden_size, m.type
    p = {name: a.astype(np.float32) for name, a in ck.params.items()}
    lstm = cell == "lstm"
    nodes, inits = [], []

    def const(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    const("onehot_values", np.array([0.0, 1.0], np.float32))
    const("depth", np.array(V, np.int64))
    const("axis1", np.array([1], np.int64))
    const("zero_axis", np.array([0], np.int64))
    x = node("OneHot", ["ids", "depth", "onehot_values"], ["x0"], axis=-1)  # (T, B, V)
    h_out, c_out = [], []
    for l in range(L):
        Wx, Wh, b = p[f"l{l}/Wx"], p[f"l{l}/Wh"], p[f"l{l}/b"]
        G = Wx.shape[0]
        rb = np.zeros(G, np.float32)
        if cell == "gru":
            rb[2 * H :] = p[f"l{l}/bhn"]  # ONNX's Rbh: added to the recurrent product before the reset
        W = const(f"l{l}/W", _blocks(Wx, cell, H)[None])  # (1, G, D)
        R = const(f"l{l}/R", _blocks(Wh, cell, H)[None])  # (1, G, H)
        Bias = const(f"l{l}/B", np.concatenate([_blocks(b, cell, H), rb])[None])  # (1, 2G): Wb then Rb
        const(f"l{l}/at", np.array([l], np.int64))
        const(f"l{l}/next", np.array([l + 1], np.int64))
        h_init = node("Slice", ["h0", f"l{l}/at", f"l{l}/next", "zero_axis"], [f"l{l}/h_init"])  # (1, B, H)
        ins = [x, W, R, Bias, "", h_init]
        attrs = {"hidden_size": H}
        if lstm:
            ins.append(node("Slice", ["c0", f"l{l}/at", f"l{l}/next", "zero_axis"], [f"l{l}/c_init"]))
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        if cell == "rnn":
            attrs["activations"] = ["Relu" if m.activation == "relu" else "Tanh"]
        outs = [f"l{l}/Y", f"l{l}/Y_h"] + ([f"l{l}/Y_c"] if lstm else [])
        node({"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell], ins, outs, **attrs)  # Y (T, 1, B, H)
        x = node("Squeeze", [f"l{l}/Y", "axis1"], [f"l{l}/out"])  # (T, B, H)
        h_out.append(f"l{l}/Y_h")
        c_out += [f"l{l}/Y_c"] if lstm else []
    headT = const("head/W_T", p["head/W"].T)  # (H, V)
    logits = node("MatMul", [x, headT], ["head/Wx"])
    logits = node("Add", [logits, const("head/b", p["head/b"])], ["logits"])  # (T, B, V)
    node("LogSoftmax", [logits], ["log_probs"], axis=-1)
    node("Concat", h_out, ["hT"], axis=0)
    if lstm:
        node("Concat", c_out, ["cT"], axis=0)

    def tensor(name, elem, dims):
        return helper.make_tensor_value_info(name, elem, dims)

    state = [L, "B", H]
    inputs = [tensor("ids", TensorProto.INT64, ["T", "B"]), tensor("h0", TensorProto.FLOAT, state)]
    outputs = [tensor("log_probs", TensorProto.FLOAT, ["T", "B", V]), tensor("hT", TensorProto.FLOAT, state)]
    if lstm:
        inputs.append(tensor("c0", TensorProto.FLOAT, state))
        outputs.append(tensor("cT", TensorProto.FLOAT, state))
    graph = helper.make_graph(nodes, f"charlm-{cell}-{L}x{H}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="charlm",
                              doc_string=__doc__.split("\n\n")[1])
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime of the last years reads
    props = {"vocabulary": json.dumps(list(ck.vocab.chars), ensure_ascii=False),
             "config": json.dumps(ck.config.to_dict()), "lineage": json.dumps(ck.meta.get("lineage"))}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def write(ck: Checkpoint, path) -> None:
    """``build`` serialised to ``path`` (atomically)."""
    from ..files import atomic_write

    raw = build(ck).SerializeToString()
    atomic_write(path, lambda f: f.write(raw))

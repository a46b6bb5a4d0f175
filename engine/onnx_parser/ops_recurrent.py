"""ONNX RNN, LSTM and GRU → recurrent layers.

W, R, B and P must be known at build time (they become weights). sequence_lens, initial_h and
initial_c become weights when known at build time and layer inputs otherwise.
"""

from __future__ import annotations

import numpy as np

from engine.ir.errors import NetworkError
from engine.ir.recurrent import make_params
from engine.onnx_parser.context import NodeContext
from engine.onnx_parser.registry import converter

# ONNX input index of each optional input, per op
_OPTIONAL = {"sequence_lens": 4, "initial_h": 5, "initial_c": 6}


@converter("RNN", "LSTM", "GRU")
def recurrent(nc: NodeContext):
    x = nc.input(0)
    dtype = nc.np_dtype(x)
    weights = {"W": nc.const(1, "W"), "R": nc.const(2, "R")}
    if nc.has_input(3):
        weights["B"] = nc.const(3, "B")
    if nc.op == "LSTM" and nc.has_input(7):
        weights["P"] = nc.const(7, "P (peepholes)")
    for name, w in list(weights.items()):
        if w.dtype != dtype:
            raise nc.error(f"{name} has element type {w.dtype}, X has {dtype}")
    inputs, runtime = [x], []
    for name, idx in _OPTIONAL.items():
        if name == "initial_c" and nc.op != "LSTM":
            continue
        if not nc.has_input(idx):
            continue
        if nc.is_const(idx):
            weights[name] = nc.const(idx, name)
        else:
            inputs.append(nc.input(idx))
            runtime.append(name)
    hidden = nc.attr("hidden_size")
    if hidden is None:
        hidden = int(weights["R"].shape[-1])
    fields = {"clip": None if nc.attr("clip") is None else float(nc.attr("clip")),
              "layout": int(nc.attr("layout", 0)), "runtime_inputs": tuple(runtime)}
    if nc.op == "GRU":
        fields["linear_before_reset"] = bool(nc.attr("linear_before_reset", 0))
    if nc.op == "LSTM":
        fields["input_forget"] = bool(nc.attr("input_forget", 0))
    activations = [a.decode() if isinstance(a, bytes) else a for a in (nc.attr("activations") or [])]
    try:
        params = make_params(nc.op, int(hidden), str(nc.attr("direction", "forward")), activations,
                             list(nc.attr("activation_alpha") or []), list(nc.attr("activation_beta") or []),
                             **fields)
    except NetworkError as e:
        raise nc.error(str(e)) from None
    weights = {k: (np.asarray(v) if k == "sequence_lens" else v) for k, v in weights.items()}
    return nc.add(params, inputs, weights)

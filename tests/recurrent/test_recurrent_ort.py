"""RNN, LSTM and GRU models built with onnx.helper on seeded random data, run through hetrt's
runtime (parse → build → plan → run) and checked against ONNX Runtime (CPU).

FP32 must agree to 1e-5 relative; FP16 (fp16 storage, fp32 accumulation) to 1e-2.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.logger import Logger, Severity
from engine.runtime import Runtime

ort = pytest.importorskip("onnxruntime")

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def make_case(op: str, *, seq: int = 5, batch: int = 3, inp: int = 4, hidden: int = 6,
              direction: str = "forward", layout: int = 0, seq_lens: bool = False, runtime_lens: bool = False,
              initial: str | None = None, peepholes: bool = False, seed: int = 0, **attrs):
    """(model, feeds): one recurrent node whose every output is a graph output.

    ``initial`` is None, 'const' (initializers) or 'input' (graph inputs).
    """
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    f32 = np.float32
    x = rng.standard_normal((seq, batch, inp)).astype(f32)  # data drawn in layout 0, then transposed
    if layout == 1:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
    inits = {"W": (rng.standard_normal((d, g * hidden, inp)) * 0.5).astype(f32),
             "R": (rng.standard_normal((d, g * hidden, hidden)) * 0.5).astype(f32),
             "B": (rng.standard_normal((d, 2 * g * hidden)) * 0.5).astype(f32)}
    feeds = {"X": x}
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)]
    names = ["X", "W", "R", "B", "", "", "", ""]
    if seq_lens:
        lens = rng.integers(1, seq + 1, batch).astype(np.int32)
        lens[0] = seq
        names[4] = "L"
        if runtime_lens:
            feeds["L"] = lens
            graph_inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, lens.shape))
        else:
            inits["L"] = lens
    state = (d, batch, hidden) if layout == 0 else (batch, d, hidden)
    states = ["H0", "C0"] if op == "LSTM" else ["H0"]
    if initial is not None:
        for k, s in enumerate(states):
            v = rng.standard_normal((d, batch, hidden)).astype(f32)
            if layout == 1:
                v = np.ascontiguousarray(v.transpose(1, 0, 2))
            names[5 + k] = s
            if initial == "const":
                inits[s] = v
            else:
                feeds[s] = v
                graph_inputs.append(helper.make_tensor_value_info(s, TensorProto.FLOAT, state))
    if peepholes:
        inits["P"] = (rng.standard_normal((d, 3 * hidden)) * 0.5).astype(f32)
        names[7] = "P"
    n_in = 8 if op == "LSTM" else 6
    while n_in > 4 and names[n_in - 1] == "":
        n_in -= 1
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    y_shape = (seq, d, batch, hidden) if layout == 0 else (batch, seq, d, hidden)
    out_shapes = [y_shape] + [state] * (len(outs) - 1)
    node = helper.make_node(op, names[:n_in], outs, hidden_size=hidden, direction=direction, layout=layout,
                            **attrs)
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in zip(outs, out_shapes)]
    graph = helper.make_graph([node], f"{op.lower()}_case", graph_inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8  # what every ONNX Runtime of the test extras reads
    onnx.checker.check_model(model)
    return model, feeds


def onnxruntime_outputs(op: str, seed: int, **kw) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs. Its CPU kernels take layout 0 only, so a layout-1 case runs as the
    same data in layout 0 and the outputs are transposed to batch-first."""
    layout = kw.pop("layout", 0)
    model, feeds = make_case(op, seed=seed, layout=0, **kw)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    if layout == 1:
        out = {k: v.transpose(2, 0, 1, 3) if k == "Y" else v.transpose(1, 0, 2) for k, v in out.items()}
    return out


def run_both(op: str, seed: int, fp16: bool = False, **kw):
    model, feeds = make_case(op, seed=seed, **kw)
    want = onnxruntime_outputs(op, seed, **kw)
    data = build_from_onnx(model, BuilderConfig(fp16=fp16), Logger(Severity.ERROR))
    got = Runtime(Logger(Severity.ERROR)).deserialize(data).create_execution_context().execute(feeds)
    return got, want


def check(got, want, rtol):
    assert set(got) == set(want)
    for k, ref in want.items():
        out = np.asarray(got[k], np.float32)
        assert out.shape == ref.shape, k
        scale = max(float(np.abs(ref).max()), 1e-6)
        err = float(np.abs(out - ref).max()) / scale
        assert err <= rtol, f"{k}: max error {err:.3g} x max|ref| > {rtol}"


CASES = [
    ("RNN", {}),
    ("RNN", {"direction": "reverse", "activations": ["Relu"]}),
    ("RNN", {"direction": "bidirectional", "seq_lens": True, "initial": "const"}),
    ("RNN", {"layout": 1, "initial": "input", "direction": "bidirectional"}),
    ("RNN", {"activations": ["LeakyRelu"], "activation_alpha": [0.3], "clip": 1.5}),
    ("GRU", {}),
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional", "seq_lens": True, "runtime_lens": True}),
    ("GRU", {"layout": 1, "seq_lens": True, "initial": "input", "direction": "reverse"}),
    ("GRU", {"activations": ["HardSigmoid", "Softsign"], "activation_alpha": [0.3], "activation_beta": [0.4]}),
    ("LSTM", {}),
    ("LSTM", {"direction": "bidirectional", "peepholes": True, "initial": "const", "seq_lens": True}),
    ("LSTM", {"layout": 1, "direction": "bidirectional", "seq_lens": True, "runtime_lens": True,
              "initial": "input"}),
    ("LSTM", {"direction": "reverse", "clip": 0.8, "peepholes": True}),
    ("LSTM", {"activations": ["HardSigmoid", "Elu", "Softplus"], "activation_alpha": [0.25, 0.7],
              "activation_beta": [0.45]}),
    ("LSTM", {"input_forget": 1, "peepholes": True}),
]


def _id(case):
    op, kw = case
    return op + "".join(f"-{k}={v}" for k, v in kw.items()).replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_fp32_matches_onnxruntime(case):
    op, kw = case
    got, want = run_both(op, len(_id(case)), **kw)
    check(got, want, 1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c[1].get("seq_lens") or c[1].get("layout")],
                         ids=[_id(c) for c in CASES if c[1].get("seq_lens") or c[1].get("layout")])
def test_fp16_matches_onnxruntime(case):
    op, kw = case
    got, want = run_both(op, 7, fp16=True, **kw)
    check(got, want, 1e-2)


def test_longer_sequence_fp32():
    """A longer bidirectional LSTM: errors must not grow past fp32 tolerance over 40 steps."""
    got, want = run_both("LSTM", 11, seq=40, batch=2, inp=8, hidden=16, direction="bidirectional", seq_lens=True)
    check(got, want, 1e-5)

"""Recurrent layers through the network API: shape inference, validation, plan round trip, the
reference kernel against a float64 textbook LSTM, placement (DLA fallback) and parser errors."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.dla import supports
from backends.reference import run_layer
from dla_sim.config import ORIN
from engine import plan as P
from engine.builder import Builder, BuilderConfig
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import ExecutionError, NetworkError, ParserError
from engine.ir.layers import LayerKind, params_from_dict
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.onnx_parser import parse
from engine.runtime import Runtime


def lstm_net(rng, direction="bidirectional", layout=0, runtime_lens=True, seq=6, batch=3, inp=5, hidden=4):
    d = 2 if direction == "bidirectional" else 1
    n = Network("lstm")
    x = n.add_input("x", (seq, batch, inp) if layout == 0 else (batch, seq, inp))
    lens = n.add_input("lens", (batch,), DataType.INT32) if runtime_lens else np.array([seq] * batch, np.int32)
    f = np.float32
    outs = n.add_recurrent("lstm", x, (rng.standard_normal((d, 4 * hidden, inp)) * 0.5).astype(f),
                           (rng.standard_normal((d, 4 * hidden, hidden)) * 0.5).astype(f),
                           (rng.standard_normal((d, 8 * hidden)) * 0.5).astype(f),
                           P=(rng.standard_normal((d, 3 * hidden)) * 0.5).astype(f), sequence_lens=lens,
                           direction=direction, layout=layout, name="lstm")
    for t in outs:
        n.mark_output(t)
    n.validate()
    return n


def test_shapes_of_both_layouts(rng):
    n = lstm_net(rng)
    assert [n.tensors[t].shape for t in n.layer("lstm").outputs] == [(6, 2, 3, 4), (2, 3, 4), (2, 3, 4)]
    n = lstm_net(rng, layout=1)
    assert [n.tensors[t].shape for t in n.layer("lstm").outputs] == [(3, 6, 2, 4), (3, 2, 4), (3, 2, 4)]


def _weights(rng, kind: str, dirs: int = 1, inp: int = 5, hidden: int = 4):
    g = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    return (rng.standard_normal((dirs, g * hidden, inp)).astype(np.float32),
            rng.standard_normal((dirs, g * hidden, hidden)).astype(np.float32))


@pytest.mark.parametrize("kind, change, message", [
    ("rnn", {"direction": "sideways"}, "direction 'sideways'"),
    ("rnn", {"layout": 2}, "layout must be 0 or 1"),
    ("gru", {"activations": ["Tanh"]}, "takes 2 activations, got 1"),
    ("rnn", {"activations": ["Gelu"]}, "activation 'Gelu' is not supported"),
    ("rnn", {"activation_alpha": [0.5]}, "more values than the activations"),
    ("rnn", {"clip": -1.0}, "clip must be > 0"),
    ("rnn", {"linear_before_reset": True}, "GRU only"),
    ("gru", {"input_forget": True}, "LSTM only"),
    ("rnn", {"sequence_lens": np.array([1, 2, 9], np.int32)}, "must lie in [1, 6]"),
    ("rnn", {"sequence_lens": np.array([1, 2], np.int32)}, "sequence_lens shape (2,) != (3,)"),
    ("lstm", {"initial_h": np.zeros((2, 3, 4), np.float32)}, "initial_h shape (2, 3, 4) != (1, 3, 4)"),
    ("gru", {"initial_c": np.zeros((1, 3, 4), np.float32)}, "initial_c applies to LSTM only"),
    ("lstm", {"P": np.zeros((1, 8), np.float32)}, "weights 'P' shape (1, 8) != (1, 12)"),
    ("gru", {"B": np.zeros((1, 12), np.float32)}, "weights 'B' shape (1, 12) != (1, 24)"),
])
def test_invalid_parameters_are_named(rng, kind, change, message):
    n = Network()
    x = n.add_input("x", (6, 3, 5))
    w, r = _weights(rng, kind)
    with pytest.raises(NetworkError) as e:
        n.add_recurrent(kind, x, w, r, name="cell", **change)
    assert message in str(e.value)


def test_weights_of_the_wrong_gate_count_are_rejected(rng):
    n = Network()
    x = n.add_input("x", (6, 3, 5))
    w, r = _weights(rng, "rnn")
    with pytest.raises(NetworkError, match=r"weights 'W' shape \(1, 4, 5\) != \(1, 12, 5\)"):
        n.add_recurrent("gru", x, w, r, hidden_size=4, name="cell")


def test_layer_error_names_the_layer(rng):
    n = Network()
    x = n.add_input("x", (6, 3, 5))
    with pytest.raises(NetworkError, match=r"layer 'cell' \(rnn\).*weights 'R' shape"):
        n.add_recurrent("rnn", x, rng.standard_normal((1, 4, 5)).astype(np.float32),
                        rng.standard_normal((1, 4, 3)).astype(np.float32), hidden_size=4, name="cell")


def _textbook_lstm(x, w, r, b, p, lens):
    """One forward direction of ONNX LSTM in float64 (gates i o f c)."""
    seq, batch, _ = x.shape
    h4 = w.shape[0]
    n = h4 // 4
    h = np.zeros((batch, n))
    c = np.zeros((batch, n))
    y = np.zeros((seq, batch, n))

    def sig(v):
        return 1 / (1 + np.exp(-v))

    for bi in range(batch):
        hb, cb = h[bi], c[bi]
        for t in range(lens[bi]):
            g = w @ x[t, bi] + r @ hb + b[:h4] + b[h4:]
            i = sig(g[:n] + p[:n] * cb)
            f = sig(g[2 * n:3 * n] + p[2 * n:] * cb)
            cb = f * cb + i * np.tanh(g[3 * n:])
            o = sig(g[n:2 * n] + p[n:2 * n] * cb)
            hb = o * np.tanh(cb)
            y[t, bi] = hb
        h[bi], c[bi] = hb, cb
    return y, h, c


def test_reference_kernel_matches_float64_textbook(rng):
    n = lstm_net(rng, direction="forward")
    layer = n.layer("lstm")
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)
    lens = np.array([6, 2, 4], np.int32)
    y, y_h, y_c = run_layer(layer, [x, lens])
    w = {k: v.astype(np.float64) for k, v in layer.weights.items()}
    ry, rh, rc = _textbook_lstm(x.astype(np.float64), w["W"][0], w["R"][0], w["B"][0], w["P"][0], lens)
    np.testing.assert_allclose(y[:, 0], ry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_h[0], rh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y_c[0], rc, rtol=1e-5, atol=1e-6)
    assert np.all(y[2:, 0, 1] == 0) and np.all(y[4:, 0, 2] == 0)  # past each length: zeros


@pytest.mark.parametrize("fp16", [False, True])
def test_plan_round_trip(rng, fp16):
    n = lstm_net(rng)
    data = Builder(Logger(Severity.ERROR)).build_serialized_network(n, BuilderConfig(fp16=fp16))
    contents = P.deserialize(data)
    layer = contents.network.layer("lstm")
    assert layer.kind is LayerKind.LSTM
    assert layer.params == n.layer("lstm").params
    assert params_from_dict("lstm", layer.params.to_dict()) == layer.params
    assert layer.precision is (Precision.FP16 if fp16 else Precision.FP32)
    feeds = {"x": rng.standard_normal((6, 3, 5)).astype(np.float32), "lens": np.array([6, 1, 3], np.int32)}
    got = Runtime(Logger(Severity.ERROR)).deserialize(data).create_execution_context().execute(feeds)
    ref_layer = n.layer("lstm")
    want = run_layer(ref_layer, [feeds["x"], feeds["lens"]], Precision.FP16 if fp16 else Precision.FP32)
    for t, w in zip(ref_layer.outputs, want):
        np.testing.assert_allclose(got[t], w, rtol=1e-6, atol=1e-6)


def test_sequence_lengths_checked_at_run_time(rng):
    n = lstm_net(rng)
    data = Builder(Logger(Severity.ERROR)).build_serialized_network(n, BuilderConfig())
    ctx = Runtime(Logger(Severity.ERROR)).deserialize(data).create_execution_context()
    feeds = {"x": rng.standard_normal((6, 3, 5)).astype(np.float32), "lens": np.array([6, 7, 3], np.int32)}
    with pytest.raises(ExecutionError, match="sequence_lens"):
        ctx.execute(feeds)


def test_dla_refuses_recurrent_layers_with_a_reason(rng):
    n = lstm_net(rng)
    s = supports(n.layer("lstm"), n, Precision.FP16, ORIN)
    assert not s.ok
    assert "lstm" in s.reason and "no DLA support" in s.reason


def test_gpu_backend_runs_recurrent_layers_eagerly_between_its_graphs(rng):
    """The lowering table refuses them (no graph capture of cuBLAS); the GPU backend takes FP32/FP16
    ones all the same and runs them with CuPy between its graphs; INT8 ones go to the reference."""
    from backends.gpu.backend import GpuBackend
    from backends.gpu.lower import supports as gpu_supports

    n = lstm_net(rng)
    layer = n.layer("lstm")
    ok, why = gpu_supports(layer, n)
    assert not ok and "eagerly with CuPy" in why
    assert GpuBackend().supports(layer, n) is None
    layer.precision = Precision.INT8
    assert GpuBackend().supports(layer, n) is not None


def test_the_gpu_recurrence_is_the_reference_code(rng):
    """The GPU path runs ``recurrent(..., xp=cupy)``; with xp=numpy it must equal the reference kernel."""
    from backends.reference.ops.recurrent import recurrent

    n = lstm_net(rng, layout=1)
    layer = n.layer("lstm")
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    lens = np.array([6, 2, 5], np.int32)
    want = run_layer(layer, [x, lens])
    got = recurrent(layer, [x, lens], layer.weights, xp=np)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def _onnx_rnn(w_initializer: bool = True, activations=None):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4, 3)).astype(np.float32)
    r = rng.standard_normal((1, 4, 4)).astype(np.float32)
    attrs = {"hidden_size": 4}
    if activations:
        attrs["activations"] = activations
    node = helper.make_node("RNN", ["X", "W", "R"], ["Y"], name="rnn0", **attrs)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, (2, 1, 3))]
    inits = [numpy_helper.from_array(r, "R")]
    if w_initializer:
        inits.append(numpy_helper.from_array(w, "W"))
    else:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, w.shape))
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, (2, 1, 1, 4))
    graph = helper.make_graph([node], "g", inputs, [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_parser_errors_name_the_node():
    with pytest.raises(ParserError, match=r"node 'rnn0' \(op RNN.*'W' \(W\) must be known at build time"):
        parse(_onnx_rnn(w_initializer=False))
    with pytest.raises(ParserError, match=r"node 'rnn0' \(op RNN.*activation 'Swish' is not supported"):
        parse(_onnx_rnn(activations=["Swish"]))
    net = parse(_onnx_rnn())
    assert net.count(LayerKind.RNN) == 1


def test_unused_state_output_is_not_an_error():
    net = parse(_onnx_rnn())
    assert net.tensors[net.outputs[0]].shape == (2, 1, 1, 4)


def test_cost_model_counts_the_recurrent_products(rng):
    from scheduler.layer_work import layer_work

    n = lstm_net(rng)  # seq 6, batch 3, input 5, hidden 4, bidirectional
    assert layer_work(n.layer("lstm"), n).macs == 6 * 3 * (2 * 16 * 5 + 2 * 16 * 4)


def test_only_the_final_state_is_read():
    """An encoder that keeps Y_h only: Y and Y_c are produced but unused."""
    from test_recurrent_ort import make_case, onnxruntime_outputs

    from engine.builder import build_from_onnx

    model, feeds = make_case("LSTM", direction="bidirectional", seq_lens=True, seed=3)
    keep = [o for o in model.graph.output if o.name == "Y_h"]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    data = build_from_onnx(model, BuilderConfig(), Logger(Severity.ERROR))
    got = Runtime(Logger(Severity.ERROR)).deserialize(data).create_execution_context().execute(feeds)
    want = onnxruntime_outputs("LSTM", 3, direction="bidirectional", seq_lens=True)["Y_h"]
    assert list(got) == ["Y_h"]
    np.testing.assert_allclose(got["Y_h"], want, rtol=1e-5, atol=1e-6)

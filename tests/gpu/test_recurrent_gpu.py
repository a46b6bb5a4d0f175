"""RNN, LSTM and GRU on the GPU backend (CuPy, eagerly between CUDA graphs), against the reference
backend and, through the runtime, against ONNX Runtime. Skipped without CUDA.

The recurrent layer sits between GPU-lowered layers, so its CuPy outputs feed a captured graph and
its inputs come from one. FP32: 1e-5 relative; FP16 (fp16 storage, fp32 compute): 1e-2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recurrent"))
from test_recurrent_ort import make_case, onnxruntime_outputs  # noqa: E402

from backends import reference  # noqa: E402
from backends.gpu.backend import GpuPartition  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.dtypes import DataType, Precision  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.ir.network import Network  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.gpu

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def sandwich(rng, kind: str, direction: str, layout: int, seq=7, batch=3, inp=8, hidden=16) -> Network:
    """tanh → recurrent (runtime lengths and initial state) → sigmoid on Y."""
    d, g = (2 if direction == "bidirectional" else 1), GATES[kind]
    n = Network(kind)
    x = n.add_input("x", (seq, batch, inp) if layout == 0 else (batch, seq, inp))
    lens = n.add_input("lens", (batch,), DataType.INT32)
    h0 = n.add_input("h0", (d, batch, hidden) if layout == 0 else (batch, d, hidden))
    t = n.add_activation(x, "tanh", name="pre")
    f = np.float32
    outs = n.add_recurrent(kind, t, (rng.standard_normal((d, g * hidden, inp)) * 0.3).astype(f),
                           (rng.standard_normal((d, g * hidden, hidden)) * 0.3).astype(f),
                           (rng.standard_normal((d, 2 * g * hidden)) * 0.3).astype(f), sequence_lens=lens,
                           initial_h=h0, direction=direction, layout=layout, name="rec")
    n.mark_output(n.add_activation(outs[0], "sigmoid", name="post"))
    n.mark_output(outs[1])
    n.validate()
    return n


@pytest.mark.parametrize("precision, rtol", [(Precision.FP32, 1e-5), (Precision.FP16, 1e-2)])
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("direction, layout", [("forward", 0), ("reverse", 1), ("bidirectional", 0),
                                               ("bidirectional", 1)])
def test_partition_matches_reference(rng, kind, direction, layout, precision, rtol):
    net = sandwich(rng, kind, direction, layout)
    for layer in net.layers:
        layer.precision = precision
    seq, batch = 7, 3
    d = 2 if direction == "bidirectional" else 1
    feeds = {"x": rng.standard_normal(net.tensors["x"].shape).astype(np.float32),
             "lens": rng.integers(1, seq + 1, batch).astype(np.int32),
             "h0": rng.standard_normal(net.tensors["h0"].shape).astype(np.float32)}
    assert feeds["h0"].shape[:2] in ((d, batch), (batch, d))
    ref = reference.execute(net, feeds)
    part = GpuPartition(net, [la.name for la in net.layers])
    assert part.fallback_layers == ["rec"]
    ctx = part.create_context()
    for _ in range(2):
        got = ctx.execute(feeds)
    for name in net.outputs:
        g, r = got[name].astype(np.float64), ref[name].astype(np.float64)
        assert g.shape == r.shape
        err = float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-6))
        assert err <= rtol, f"{name}: {err:.3g}"
    dev = ctx.execute_device(feeds)  # device outputs stay CuPy arrays
    assert all(hasattr(v, "get") for v in dev.values())


@pytest.mark.parametrize("fp16, rtol", [(False, 1e-5), (True, 1e-2)])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_runtime_on_gpu_matches_onnxruntime(op, fp16, rtol):
    kw = {"direction": "bidirectional", "seq_lens": True, "runtime_lens": True, "initial": "input", "seq": 12,
          "hidden": 32}
    model, feeds = make_case(op, seed=5, **kw)
    want = onnxruntime_outputs(op, 5, **kw)
    data = build_from_onnx(model, BuilderConfig(fp16=fp16), Logger(Severity.ERROR))
    engine = Runtime(Logger(Severity.ERROR)).deserialize(data)
    assert engine.placement["gpu_backend"] == "gpu"
    got = engine.create_execution_context().execute(feeds)
    # the CPU oracle at the same precision: a recurrence amplifies rounding step by step (a tanh RNN
    # over 12 steps with random weights most), so the GPU must be within rtol of ONNX Runtime or no
    # worse than twice the reference backend's own distance to it
    ref_plan = build_from_onnx(model, BuilderConfig(fp16=fp16, platform="host"), Logger(Severity.ERROR))
    cpu_net = Runtime(Logger(Severity.ERROR)).deserialize(ref_plan).network
    cpu = reference.execute(cpu_net, feeds, precision_of=lambda la: la.precision or Precision.FP32)
    for k, ref in want.items():
        scale = np.abs(ref).max()
        err = float(np.abs(got[k].astype(np.float64) - ref).max() / scale)
        err_cpu = float(np.abs(cpu[k].astype(np.float64) - ref).max() / scale)
        assert err <= max(rtol, 2 * err_cpu), f"{k}: {err:.3g} (reference backend: {err_cpu:.3g})"

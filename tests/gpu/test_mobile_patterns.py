"""The layer patterns of MobileNetV2 and EfficientNet-B0, through the real path on the GPU backend.

A small ONNX network holds each pattern those exports carry: Clip with min/max given as inputs
(ReLU6), depthwise convolutions with stride 1 and 2 and padding 1, HardSwish, SiLU as
Sigmoid * x, a squeeze-excitation block (ReduceMean keepdims, 1x1 convs, a (N, C, 1, 1) operand
broadcast over (N, C, H, W)), a residual Add, Concat and Split on channels, GlobalAveragePool
followed by Flatten or Reshape, Dropout and Gemm. Channel counts are not multiples of 8, so the
NHWC padding is exercised everywhere.

It goes ONNX -> builder (FP16) -> plan -> runtime, and the outputs are compared with the same plan
run on the reference backend (FP16: fp16 storage, fp32 accumulation) and with ONNX Runtime fp32.
Weights are variance-preserving and inputs fresh, so every tensor is O(1): a network whose
outputs underflow fp16 would compare zeros with zeros and prove nothing (the random-init
torchvision models did exactly that, see bench/gpu_torchvision.py). Skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

from engine import runtime as rt  # noqa: E402
from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.compare import onnxruntime_outputs  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402

pytestmark = pytest.mark.gpu


class _NoGpu:
    """The GPU backend as on a machine without a GPU: the same plan runs on the reference backend."""

    name = "gpu"

    def available(self):
        return False, "disabled by the test"


class _Graph:
    """A tiny ONNX graph builder: conv + BN blocks with random, variance-preserving weights."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}{self._n}"

    def const(self, value: np.ndarray, base: str = "w") -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs

    def conv_bn(self, x: str, c: int, k: int, ks: int = 1, stride: int = 1, groups: int = 1, bn: bool = True,
                bias: bool = False) -> str:
        fan_in = c // groups * ks * ks
        w = (self.rng.standard_normal((k, c // groups, ks, ks)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        ins = [x, self.const(w)]
        if bias:
            ins.append(self.const(self.rng.uniform(-0.2, 0.2, k).astype(np.float32), "b"))
        y = self.op("Conv", ins, kernel_shape=[ks, ks], strides=[stride, stride], pads=[ks // 2] * 4,
                    group=groups)[0]
        if not bn:
            return y
        u = self.rng.uniform
        stats = [u(0.5, 1.5, k), u(-0.2, 0.2, k), u(-0.2, 0.2, k), u(0.5, 1.5, k)]  # gamma, beta, mean, var
        return self.op("BatchNormalization", [y, *(self.const(s.astype(np.float32), "bn") for s in stats)],
                       epsilon=1e-5)[0]

    def relu6(self, x: str) -> str:
        return self.op("Clip", [x, self.const(np.float32(0.0), "lo"), self.const(np.float32(6.0), "hi")])[0]

    def silu(self, x: str) -> str:
        return self.op("Mul", [x, self.op("Sigmoid", [x])[0]])[0]


def _mobile_net(rng: np.random.Generator, batch: int = 2) -> onnx.ModelProto:
    g = _Graph(rng)
    x = g.relu6(g.conv_bn("input", 3, 12, 3, stride=2))  # stem: 32x32 -> 16x16
    x = g.relu6(g.conv_bn(x, 12, 12, 3, groups=12))  # depthwise, stride 1
    a = g.conv_bn(x, 12, 20)  # linear bottleneck
    y = g.op("HardSwish", [g.conv_bn(a, 20, 36)])[0]  # expand
    y = g.silu(g.conv_bn(y, 36, 36, 3, stride=2, groups=36))  # depthwise, stride 2, pad 1: 16 -> 8
    s = g.op("ReduceMean", [y], axes=[2, 3], keepdims=1)[0]  # squeeze-excitation
    s = g.silu(g.conv_bn(s, 36, 10, bn=False, bias=True))
    s = g.op("Sigmoid", [g.conv_bn(s, 10, 36, bn=False, bias=True)])[0]
    y = g.op("Mul", [y, s])[0]  # (N, 36, 8, 8) * (N, 36, 1, 1)
    p = g.conv_bn(y, 36, 20)  # project
    r = g.op("Add", [p, g.conv_bn(g.relu6(g.conv_bn(p, 20, 20, 3, groups=20)), 20, 20)])[0]  # residual block
    cat = g.op("Concat", [r, p], axis=1)[0]
    h1, h2 = g.op("Split", [cat, g.const(np.array([20, 20], np.int64), "split")], n_out=2, axis=1)
    h = g.op("Relu", [g.conv_bn(g.op("Sub", [h1, h2])[0], 20, 24)])[0]
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [h])[0]], axis=1)[0]
    pooled = g.op("Dropout", [pooled])[0]
    fc = (rng.standard_normal((10, 24)) / np.sqrt(24)).astype(np.float32)
    logits = g.op("Gemm", [pooled, g.const(fc), g.const(rng.uniform(-0.1, 0.1, 10).astype(np.float32), "b")],
                  transB=1)[0]
    emb = g.op("Reshape", [g.op("GlobalAveragePool", [y])[0], g.const(np.array([batch, -1], np.int64), "shape")])[0]
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    g.nodes.append(helper.make_node("Identity", [emb], ["embedding"]))
    graph = helper.make_graph(
        g.nodes, "mobile_patterns", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, 36])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _outputs(plan: bytes, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], object]:
    engine = rt.Runtime(Logger(Severity.ERROR)).deserialize(plan)
    return engine.create_execution_context().execute(feeds), engine


def test_mobile_patterns_match_reference(monkeypatch):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    model = _mobile_net(rng)
    plan = build_from_onnx(model, BuilderConfig(fp16=True, batch=2), Logger(Severity.ERROR))
    feeds = {"input": rng.uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)}
    got, engine = _outputs(plan, feeds)
    assert [p.backend for p in engine.partitions] == ["gpu"], "every pattern has a GPU kernel"
    with monkeypatch.context() as m:
        m.setitem(rt.BACKENDS, "gpu", _NoGpu)  # the same plan on the reference backend
        ref, ref_engine = _outputs(plan, feeds)
        assert [p.backend for p in ref_engine.partitions] == ["reference"]
    ort = onnxruntime_outputs(model.SerializeToString(), feeds)
    for name in ("logits", "embedding"):
        g, r, o = (np.asarray(v, np.float64) for v in (got[name], ref[name], ort[name]))
        assert np.isfinite(g).all(), name
        scale = float(np.abs(r).max())
        assert scale > 1e-2, f"{name}: reference output too small ({scale:.1e}) for an fp16 check to mean anything"
        rel = np.linalg.norm(g - r) / np.linalg.norm(r)
        assert rel < 1e-2, f"{name}: relative L2 {rel:.2e} against the FP16 reference backend"
        np.testing.assert_allclose(g, r, rtol=2e-2, atol=1e-2 * scale, err_msg=name)
        rel32 = np.linalg.norm(g - o) / np.linalg.norm(o)
        assert rel32 < 3e-2, f"{name}: relative L2 {rel32:.2e} against ONNX Runtime fp32"

"""INT8 depthwise convolution on the GPU (``dwconv_s8``) against the reference INT8 kernels, bit
for bit: single layers, a MobileNetV2 block lowered from the IR, and the same block from ONNX
through builder (calibrated) -> plan -> runtime. Fresh random data (the seed is printed). Skipped
without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import int8_nets as nets  # noqa: E402
from test_int8 import _check, _NoGpu  # noqa: E402

pytestmark = pytest.mark.gpu

DW = [  # n, c, h, w, r, stride, pad, dilation, act, residual, float output
    pytest.param(2, 144, 56, 56, 3, 1, 1, 1, nets.CLIP6, False, False, id="mbv2-3x3-144"),
    pytest.param(2, 96, 28, 28, 3, 2, 1, 1, nets.CLIP6, False, False, id="mbv2-3x3-stride2"),
    pytest.param(2, 40, 28, 28, 5, 1, 2, 1, nets.RELU, True, False, id="effnet-5x5-c40-residual"),
    pytest.param(1, 24, 15, 13, 5, 2, 2, 1, None, False, False, id="5x5-stride2-odd"),
    pytest.param(2, 24, 12, 12, 3, 1, 2, 2, nets.RELU, True, False, id="dilation2-residual"),
    pytest.param(2, 20, 9, 9, 3, 1, 1, 1, nets.RELU, False, True, id="float-output"),
]


@pytest.mark.parametrize("n,c,h,w,r,stride,pad,dil,act,residual,f32", DW)
def test_int8_depthwise_bit_exact(rng, n, c, h, w, r, stride, pad, dil, act, residual, f32):
    part = _check(*nets.dw_net(rng, n, c, h, w, r, stride, pad, dil, act, residual, None if f32 else "auto"))
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count("dwconv8") == 1 and "conv8" not in kinds, kinds


def test_int8_mobile_block_stays_on_device(rng):
    part = _check(*nets.mobile_block_net(rng))
    kinds = [op.kind for u in part.units if u.lowered for op in u.lowered.ops]
    assert kinds.count("dwconv8") == 2 and kinds.count("conv8") == 2, kinds


def test_int8_mobile_block_onnx_through_the_runtime(rng, monkeypatch):
    """ONNX block -> builder (INT8, min-max calibration) -> plan -> runtime: the GPU's outputs
    equal the same plan's on the reference backend bit for bit, the depthwise layer on dwconv_s8."""
    from engine import runtime as rt
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.logger import Logger, Severity
    from engine.quantization import make_calibrator

    quiet = Logger(Severity.ERROR)
    model, calib = nets.mobile_block_onnx(rng)
    plan = build_from_onnx(model, BuilderConfig(batch=2, int8=True, calibrator=make_calibrator("minmax", calib)),
                           quiet)
    feeds = [{"x": rng.normal(size=calib[0]["x"].shape).astype(np.float32)} for _ in range(3)]

    def run() -> tuple[list[np.ndarray], object]:
        engine = rt.Runtime(quiet).deserialize(plan)
        ctx = engine.create_execution_context()
        return [ctx.execute(f)["y"] for f in feeds], engine

    gpu, engine = run()
    assert all(p.backend == "gpu" for p in engine.partitions), [p.reason for p in engine.partitions]
    kinds = [c.describe()["kernels"] for c in engine.compiled_partitions if c.desc.backend == "gpu"]
    assert sum(k.get("dwconv8", 0) for k in kinds) == 1 and sum(k.get("conv8", 0) for k in kinds) == 2, kinds
    with monkeypatch.context() as m:
        m.setitem(rt.BACKENDS, "gpu", _NoGpu)
        ref, _ = run()
    for g, r in zip(gpu, ref):
        np.testing.assert_array_equal(g.view(np.uint32), r.view(np.uint32))

"""A GPU + DLA plan computes what the reference backend computes where that is the contract: INT8
hand-offs between the DLA and the GPU lane are exact (q * scale), so an INT8 plan split into many
alternating partitions gives the reference backend's outputs bit for bit, one frame at a time and
as a pipelined stream."""

from __future__ import annotations

import numpy as np
import pytest
from scheduler_runtime_plans import QUIET

from backends.reference import execute as reference_execute
from engine.builder import Builder, BuilderConfig
from engine.models.zoo import mobilenet_v2
from engine.onnx_parser import parse
from engine.quantization import make_calibrator
from engine.runtime import Runtime


@pytest.fixture(scope="module")
def int8_mixed():
    net = parse(mobilenet_v2(image=32, classes=10, width=0.5, seed=3))
    rng = np.random.default_rng(11)
    calib = [{n: rng.standard_normal(net.tensors[n].shape).astype(np.float32) for n in net.inputs} for _ in range(3)]
    # the DLA runs every layer of this network: pin every third convolution to the GPU (trtexec's
    # --layerDeviceTypes) so that the plan hands tensors over both ways many times
    convs = [la.name for la in net.layers if la.kind.value == "convolution"]
    cfg = BuilderConfig(fp16=True, int8=True, platform="orin-agx-64gb", placement_policy="dla-first",
                        calibrator=make_calibrator("minmax", calib), layer_devices=dict.fromkeys(convs[1::3], "gpu"))
    return Runtime(QUIET, platform="orin-agx-64gb").deserialize(Builder(QUIET).build_serialized_network(net, cfg))


def test_int8_gpu_dla_plan_equals_the_reference_backend(int8_mixed):
    engine = int8_mixed
    devices = [p.device for p in engine.partitions]
    assert devices.count("dla") >= 4 and devices.count("gpu") >= 4, devices  # many hand-offs both ways
    assert set(engine.executor.lanes) == {"gpu", "dla0"} and not engine.uses_arena
    rng = np.random.default_rng(5)
    frames = [{n: rng.standard_normal(engine.get_tensor_shape(n)).astype(np.float32) for n in engine.input_names}
              for _ in range(3)]
    ctx = engine.create_execution_context()
    stream = ctx.execute_frames(frames)
    assert {e.frame for e in ctx.last_events} == {0, 1, 2}
    for f, piped in zip(frames, stream):
        one = ctx.execute(f)
        want = reference_execute(engine.network, f)
        for k in want:
            assert np.array_equal(one[k], want[k].astype(one[k].dtype)), k
            assert np.array_equal(piped[k], one[k]), k

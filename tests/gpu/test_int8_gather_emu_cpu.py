"""ShuffleNet-style channel movement between INT8 layers without a round trip through float: a
split, a concatenation and a channel shuffle feeding an INT8 convolution lower to one int8 -> int8
gather (``lowering/int8_gather.py``), checked on the CPU through the CUDA emulator bit for bit against
the reference backend, and against the float lowering it replaces.

The network is built from ONNX by the builder (INT8, min-max calibration): a stem, a block that
splits its input, convolves one half and shuffles it back with the other (ShuffleNetV2's stride-1
unit), a block that convolves the whole input twice and shuffles the two (its stride-2 unit, here at
stride 1), a third stride-1 unit and a head convolution; the second shuffle is also a network output
(a float reader). Pinning the concatenations to FP16 puts an fp16 rounding on the way."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered
from onnx import TensorProto, helper, numpy_helper

from backends import reference
from backends.gpu.lower import lower
from backends.gpu.lowering import int8_gather
from engine.ir.dtypes import Precision
from engine.ir.logger import Logger, Severity
from engine.plan import deserialize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

N, C, H = 2, 40, 5
HALF = C // 2


def _shuffle_net(rng: np.random.Generator):
    inits, nodes = [], []

    def conv(x: str, y: str, cin: int, cout: int, k: int = 1, relu: bool = True) -> None:
        w, b = f"w_{y}", f"b_{y}"
        inits.extend([numpy_helper.from_array((rng.normal(size=(cout, cin, k, k)) / np.sqrt(cin * k * k))
                                              .astype(np.float32), w),
                      numpy_helper.from_array((rng.normal(size=cout) * 0.1).astype(np.float32), b)])
        out = f"{y}_pre" if relu else y
        nodes.append(helper.make_node("Conv", [x, w, b], [out], kernel_shape=[k, k], pads=[k // 2] * 4,
                                      name=f"conv_{y}"))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [y]))

    def shuffle(x: str, y: str) -> None:
        nodes.extend([helper.make_node("Reshape", [x, "shape5"], [f"{y}_5"]),
                      helper.make_node("Transpose", [f"{y}_5"], [f"{y}_t"], perm=[0, 2, 1, 3, 4]),
                      helper.make_node("Reshape", [f"{y}_t", "shape4"], [y])])

    inits += [numpy_helper.from_array(np.array([HALF, HALF], np.int64), "halves"),
              numpy_helper.from_array(np.array([N, 2, HALF, H, H], np.int64), "shape5"),
              numpy_helper.from_array(np.array([N, C, H, H], np.int64), "shape4")]
    conv("x", "t0", 8, C)
    prev = "t0"
    for b in range(3):
        if b == 1:  # both halves convolved (the stride-2 unit's shape)
            conv(prev, f"p{b}", C, HALF)
            conv(prev, f"q{b}", C, HALF, 3)
            parts = [f"p{b}", f"q{b}"]
        else:  # split, one half convolved
            nodes.append(helper.make_node("Split", [prev, "halves"], [f"a{b}", f"c{b}"], axis=1, name=f"split{b}"))
            conv(f"c{b}", f"d{b}", HALF, HALF)
            conv(f"d{b}", f"e{b}", HALF, HALF, 3)
            parts = [f"a{b}", f"e{b}"]
        nodes.append(helper.make_node("Concat", parts, [f"cat{b}"], axis=1, name=f"cat{b}"))
        shuffle(f"cat{b}", f"sh{b}")
        prev = f"sh{b}"
    conv(prev, "y", C, 16, relu=False)
    graph = helper.make_graph(nodes, "shuffle_units", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                      [N, 8, H, H])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, 16, H, H]),
                               helper.make_tensor_value_info("sh1", TensorProto.FLOAT, [N, C, H, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, [{"x": rng.normal(size=(N, 8, H, H)).astype(np.float32)} for _ in range(3)]


def _built(rng, fp16_concat: bool):
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.quantization import make_calibrator

    model, calib = _shuffle_net(rng)
    pins = {f"cat{b}": Precision.FP16 for b in range(3)} if fp16_concat else {}
    plan = deserialize(build_from_onnx(model, BuilderConfig(batch=N, int8=True, fp16=fp16_concat,
                                                            layer_precisions=pins,
                                                            calibrator=make_calibrator("minmax", calib)),
                                       Logger(Severity.ERROR)))
    return plan.network, {"x": rng.normal(size=(N, 8, H, H)).astype(np.float32) * 1.5}


def _same_bits(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape and np.abs(want).max() > 0, (name, got.shape, want.shape)
    bad = np.flatnonzero(got.astype(np.float32).view(np.uint32) != want.astype(np.float32).view(np.uint32))
    assert bad.size == 0, f"{name}: {bad.size} of {got.size} differ"


@pytest.mark.parametrize("fp16_concat", [False, True])
def test_shuffle_units_gather_int8_bit_exact(rng, tmp_path, monkeypatch, fp16_concat):
    net, feeds = _built(rng, fp16_concat)
    convs = [la for la in net if la.kind.name == "CONVOLUTION"]
    assert convs and all(la.precision is Precision.INT8 for la in convs)
    new = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(int8_gather, "int8_gather", lambda lw, tensor, scale: None)
        old = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in new.ops]
    gathers = [lb for lb in labels if lb.startswith("gather8_")]
    # the two split halves and the head's input are gathered, the stride-2 unit's input too
    assert len(gathers) == 4, labels
    # only the float output sh1 keeps its float path: its two sources' dequantize and the shuffle copy
    assert [lb for lb in labels if lb.startswith("dequant_")] == ["dequant_p1", "dequant_q1"], labels
    assert not any(lb.startswith(("split", "quant_sh", "quant_c")) for lb in labels), labels
    assert len(new.ops) < len(old.ops) - 4, ([op.label for op in old.ops], labels)

    kept_new, kept_old = {}, {}
    out_new = run_lowered(new, feeds, tmp_path / "new", kept_new)
    out_old = run_lowered(old, feeds, tmp_path / "old", kept_old)
    want = reference.execute(net, feeds)
    for t in ("y", "sh1"):
        _same_bits(out_new[t], want[t], t)
        _same_bits(out_old[t], want[t], f"{t} (float lowering)")
    for la in convs[:-1]:  # every INT8 result, padding included, as the float lowering leaves it
        q = f"{la.outputs[0]}@q8"
        assert np.array_equal(kept_new[q], kept_old[q]), q


def test_a_reader_of_channels_computed_on_the_way_is_not_gathered(rng):
    """An element-wise layer between the int8 results and the reader: not a channel move."""
    from backends.gpu.lowering.channel_maps import channel_sources

    net, _ = _built(rng, False)
    add_net = net.copy()
    q8 = {la.outputs[0] for la in add_net if la.precision is Precision.INT8}
    segment = {la.name for la in add_net}
    sh = next(la for la in add_net if la.outputs[0] == "sh1")
    src = channel_sources(add_net, sh.outputs[0], lambda t: t in q8, lambda t: "float32", segment)
    assert src is not None and len(src) == C and {s.tensor for s in src} == {"p1", "q1"}
    # ShuffleNet's interleave: output channel 2k is p1's k, 2k + 1 is q1's k
    assert [(s.tensor, s.channel) for s in src[:4]] == [("p1", 0), ("q1", 0), ("p1", 1), ("q1", 1)]
    relu = next(la for la in add_net if la.outputs[0] == "t0")
    assert channel_sources(add_net, "t0", lambda t: False, lambda t: "float32", segment) is None, relu.name


def test_a_requantization_at_another_scale_is_one_int8_launch(rng, tmp_path):
    """chain_net's last convolution reads the pooled int8 tensor at 1.5x its scale: one gather
    (identity channel map) instead of dequantize + quantize, the reference's bytes bit for bit,
    saturation included."""
    import int8_nets as nets

    from engine.ir import int8_annotation as annotation
    from engine.ir.int8_math import quantize

    net, feeds = nets.chain_net(rng)
    low = lower(net, net.layers, list(net.outputs))
    op = next(o for o in low.ops if o.label == "gather8_p")
    kept = {}
    got = run_lowered(low, feeds, tmp_path, kept)
    want = reference.execute(net, feeds)
    for t in net.outputs:
        _same_bits(got[t], want[t], t)
    layer = net.layer("c3")
    q = kept[op.writes[0]]
    p_scale = np.float32(annotation.read(net.layer("p")).output_scale)
    q_p = kept[f"{net.layer('p').outputs[0]}@q8"]
    floats = q_p[..., :q.shape[-1]].astype(np.float32) * p_scale
    expect = quantize(floats, np.float32(annotation.read(layer).input_scales[0]))
    assert np.array_equal(q, expect)

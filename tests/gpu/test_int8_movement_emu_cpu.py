"""Data movement between INT8 layers without a round trip through float, on the CPU through the
CUDA emulator.

A channel concatenation of int8 results read by an INT8 layer (DenseNet's blocks) lowers to one
int8 -> int8 launch (``Int8Lowering.lower_int8_concat``) instead of dequantize, float copy and
quantize: its bytes equal those of the float lowering it replaces and a numpy model of the
reference's steps, for float32 and float16 concatenations, nested ones included, on fresh random
int8 sources that reach both ends of the range. A flatten of a pooled int8 tensor is an alias
(``lower_int8_move``). Whole lowered networks (quantize, the INT8 tile kernels, pooling, the maps)
run bit for bit against the reference backend."""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels import gen
from backends.gpu.kernels import int8 as k8
from backends.gpu.kernels.int8_src import INT8_SRC
from backends.gpu.lower import lower
from backends.gpu.lower_int8 import Int8Lowering
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.int8_math import quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def _run_maps(low, leaves: dict[str, np.ndarray], x: np.ndarray, tmp_path, monkeypatch,
              convolutions: bool = False) -> dict[str, np.ndarray]:
    """Every buffer after running the lowering's map and quantize launches, with the int8 results
    in ``leaves`` as the convolutions would have left them; with ``convolutions`` the convolutions
    and poolings run too (the kernels ``int8.conv2d_s8_launches`` / ``pool2d_s8_launches`` launch)
    and ``leaves`` is empty."""
    bufs: dict[str, np.ndarray] = {"x": x}
    for name, q in leaves.items():
        bufs[name] = q

    def buf(name: str) -> np.ndarray:
        if name not in bufs:
            s = low.slots[name]
            root = s.alias or name
            if root not in bufs:
                r = low.slots[root]
                fill = 0 if np.dtype(r.dtype).kind == "i" else np.nan
                bufs[root] = r.const.astype(r.dtype) if r.const is not None else np.full(r.phys_shape, fill, r.dtype)
            bufs[name] = bufs[root].reshape(s.phys_shape)
        return bufs[name]

    for d in ("maps", "q8"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    maps = EmulatedModule(low.source.replace(gen.GEN_PRELUDE[len(gen.COMMON_SRC):], "\n", 1), tmp_path / "maps")
    quant = EmulatedModule(INT8_SRC, tmp_path / "q8", name_expressions=k8._NAMES, opt="-O1")  # + the tiles
    monkeypatch.setattr(k8, "_fn", lambda name: lambda grid, block, args: quant.run(name, grid, block[0], args))
    for op in low.ops:
        if op.kind == "gen":
            maps.run(op.kernel, op.grid, op.block, [buf(a) for a in op.args], op.smem)
        elif op.kind == "quant8":
            i = op.info
            k8.quantize_nchw(buf(i["x"]), buf(i["y"]), i["shape"], i["scale"], i["s2d"])
        elif op.kind == "pool8" and convolutions:
            i = op.info
            for la in k8.pool2d_s8_launches(buf(i["x"]), buf(i["y"]), i["geom"], i["average"]):
                quant.run(la.kernel, la.grid, la.block, la.args, la.shared_mem)
        elif op.kind == "conv8" and convolutions:
            i = op.info
            ws = np.full(max(op.workspace, 4) // 4, -7, np.int32)
            epi = k8.DeviceEpilogue.upload(i["epi"], np)
            for la in k8.conv2d_s8_launches(buf(i["x"]), buf(i["w"]), buf(i["y"]), i["geom"], i["tactic"], epi,
                                            buf(i["res"]) if i["res"] else None, ws, i["ldy"]):
                quant.run(la.kernel, la.grid, la.block, la.args, la.shared_mem)
    return bufs


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_int8_concat_is_one_launch_with_the_float_lowerings_bytes(rng, tmp_path, monkeypatch, precision):
    net, feeds = nets.dense_net(rng, precision)
    new = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(Int8Lowering, "lower_int8_concat", lambda self, layer: None)
        old = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in new.ops]
    assert labels.count("cat1_int8") == labels.count("cat2_int8") == 1
    assert not any(lb.startswith(("dequant_", "quant_cat")) or lb in ("cat1", "cat2") for lb in labels), labels
    # 3 dequantize, 2 float copies and 2 quantize launches become the 2 int8 concatenations
    assert len(new.ops) == len(old.ops) - 5, [op.label for op in old.ops]

    # the int8 results as the convolutions leave them: random bytes, zero channel padding
    scales = {t: np.float32(annotation.read(net.producer(t)).output_scale) for t in ("c0", "c1", "c2")}
    leaves = {}
    for t in scales:
        c = net.tensors[t].shape[1]
        q = np.zeros(new.slots[f"{t}@q8"].phys_shape, np.int8)
        q[..., :c] = rng.integers(-128, 128, q[..., :c].shape)
        leaves[f"{t}@q8"] = q
    got_new = _run_maps(new, {k: v.copy() for k, v in leaves.items()}, feeds["x"], tmp_path / "new", monkeypatch)
    got_old = _run_maps(old, {k: v.copy() for k, v in leaves.items()}, feeds["x"], tmp_path / "old", monkeypatch)

    def floats(t: str) -> np.ndarray:  # the float tensor as the lowering stores it, NCHW
        c = net.tensors[t].shape[1]
        v = (leaves[f"{t}@q8"][..., :c].astype(np.float32) * scales[t]).transpose(0, 3, 1, 2)
        return v.astype(np.float16 if precision is Precision.FP16 else np.float32)

    cat_dtype = np.float16 if precision is Precision.FP16 else np.float32
    cat1 = np.concatenate([floats("c0"), floats("c1")], axis=1).astype(cat_dtype)
    cat2 = np.concatenate([cat1, floats("c2")], axis=1).astype(cat_dtype)
    for reader, cat in (("c2", cat1), ("c3", cat2)):
        r_new = next(op for op in new.ops if op.label == reader).reads[0]
        r_old = next(op for op in old.ops if op.label == reader).reads[0]
        s_in = np.float32(annotation.read(net.layers[[la.name for la in net.layers].index(reader)]).input_scales[0])
        want = quantize(cat.astype(np.float32), s_in).transpose(0, 2, 3, 1)
        a, b = got_new[r_new], got_old[r_old]
        c = cat.shape[1]
        assert (want == 127).any() and (want == -128).any(), "the range's ends are not exercised"
        np.testing.assert_array_equal(a[..., :c], want)
        np.testing.assert_array_equal(a, b)  # padding channels included
        assert not a[..., c:].any()


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_int8_concat_network_emulated_equals_the_reference(rng, tmp_path, monkeypatch, precision):
    """The whole lowered network (quantize, INT8 convolutions on the tile kernels, the int8
    concatenations, the float output's copy) in the emulator, bit for bit against the reference
    backend."""
    from backends import reference

    net, feeds = nets.dense_net(rng, precision)
    low = lower(net, net.layers, list(net.outputs))
    assert {op.kind for op in low.ops} == {"quant8", "conv8", "gen"}
    bufs = _run_maps(low, {}, feeds["x"], tmp_path, monkeypatch, convolutions=True)
    want = reference.execute(net, feeds)["c3"]
    got = bufs[low.outputs["c3"]].reshape(want.shape)
    assert np.abs(want).max() > 0
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{bad.size} of {got.size} differ"


@pytest.mark.parametrize("fc_scale,flat_out", [(1.0, False), (1.0, True), (1.5, False)])
def test_int8_classifier_tail_emulated_equals_the_reference(rng, tmp_path, monkeypatch, fc_scale, flat_out):
    """conv -> global pooling -> flatten -> FC with the FC reading the pooled bytes through the
    alias (at another scale through float; the flattened tensor also an output: dequantized)."""
    from backends import reference

    net, feeds = nets.classifier_net(rng, fc_scale=fc_scale, flat_out=flat_out)
    low = lower(net, net.layers, list(net.outputs))
    bufs = _run_maps(low, {}, feeds["x"], tmp_path, monkeypatch, convolutions=True)
    ref = reference.execute(net, feeds)
    for name in net.outputs:
        want = ref[name]
        slot = low.slots[low.outputs[name]]
        got = bufs[slot.alias or slot.name].reshape(want.shape)
        assert np.abs(want).max() > 0
        bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
        assert bad.size == 0, f"{name}: {bad.size} of {got.size} differ"

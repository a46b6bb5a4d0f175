"""The squeeze-excitation gate in the INT8 convolution's tile loads (``int8_src.SeGate8``), run on the
CPU through the CUDA emulator on fresh random data:

* the kernel with a gate against a numpy float32 replay of the int8 -> int8 bridge's steps followed
  by the reference backend's INT8 convolution, bit for bit, on every kind of tile;
* the lowering (``Int8Lowering.lower_int8_bridge``): an INT8 squeeze-excitation block's project
  convolution takes ``x * gate`` in its loads, and its output equals the bridge kernel followed by
  the plain convolution, both as the lowering emits them.
"""

from __future__ import annotations

import dataclasses

import int8_nets as nets
import numpy as np
import pytest
from conv8_emu import conv8_case
from cuda_emu import EmulatedModule, compiler
from test_int8_bridge_emu_cpu import _run_gen

from backends.gpu.kernels import int8_pw
from backends.gpu.kernels.conv import ConvGeometry
from backends.gpu.kernels.int8 import (
    INT8_SRC,
    INT8_WG_SRC,
    TILES8,
    TILES8_WG,
    DeviceEpilogue,
    SeGate8,
    Tactic8,
    Tile8,
    conv2d_s8_launches,
    pack_weights8,
)
from backends.gpu.lower import lower
from backends.gpu.lower_int8 import Int8Lowering
from backends.reference import int8 as ref8
from engine.ir import int8_annotation as annotation
from engine.ir.int8_math import dequantize, quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
f32 = np.float32


def bridge_numpy(q: np.ndarray, gate: np.ndarray, sa: float, so: float, f16: bool) -> np.ndarray:
    """The bridge's float steps on int8 NHWC ``q`` (C channels) and an (N, C) fp16 gate: dequantize in
    float32, round to fp16, times the gate in float32, the stored type's rounding, rint(y / so) saturated
    with NaN -> 0."""
    a = (q.astype(f32) * f32(sa)).astype(np.float16).astype(f32)
    with np.errstate(all="ignore"):
        y = a * gate.astype(f32)[:, None, None, :]
        if f16:
            y = y.astype(np.float16).astype(f32)
        t = np.rint(y / f32(so))
    return np.where(np.isnan(t), 0, np.clip(t, -128, 127)).astype(np.int8)


def _gate(rng: np.random.Generator, n: int, c: int, stride: int) -> np.ndarray:
    """A sigmoid-like fp16 gate with a few values outside (0, 1): negative, large, subnormal, inf, NaN."""
    g = rng.uniform(0, 1, (n, c)).astype(np.float16)
    specials = np.array([0, -0.75, 3.5, 6e-8, np.inf, -np.inf, np.nan, 1], np.float16)
    idx = rng.choice(n * c, size=min(len(specials), n * c), replace=False)
    g.reshape(-1)[idx] = specials[: len(idx)]
    out = np.full((n, stride), np.nan, np.float16)  # the columns past C must never be read as a gate
    out[:, :c] = g
    return out


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_SRC, tmp_path_factory.mktemp("emu_se8"),
                          name_expressions=[t.template for t in TILES8], opt="-O1")


@pytest.fixture(scope="module")
def emu_wg(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(INT8_WG_SRC, tmp_path_factory.mktemp("emu_se8_wg"),
                          name_expressions=[t.template for t in TILES8_WG], opt="-O1")


def _check_gated(emu: EmulatedModule, rng: np.random.Generator, tactic: Tactic8, n: int, c: int, h: int, k: int,
                 f16: bool, residual: bool, gate_stride: int) -> None:
    cc = conv8_case(rng, n, c, h, k, 1, 1, 0, nets.RELU, residual, False)
    so = float(annotation.read(cc.layer).input_scales[0])
    sa = float(f32(so * rng.uniform(0.8, 2.5)))  # past 1: some products saturate
    q = nets.nhwc16(rng.integers(-128, 128, (n, c, h, h), dtype=np.int8))
    gate = _gate(rng, n, c, gate_stride)
    xb = np.zeros_like(q)
    xb[..., :c] = bridge_numpy(q[..., :c], gate[:, :c], sa, so, f16)
    xb_nchw = xb[..., :c].transpose(0, 3, 1, 2)
    x_float = dequantize(np.ascontiguousarray(xb_nchw), f32(so))
    assert np.array_equal(quantize(x_float, f32(so)), xb_nchw), "the reference must read back the bridge's q"
    assert (np.abs(xb_nchw) == 127).any() and (xb_nchw == 0).any(), "saturated and zero operands both occur"
    inputs = [x_float]
    if residual:
        rs = annotation.read(cc.layer).input_scales[1]
        inputs.append(dequantize(np.ascontiguousarray(cc.rq[..., :k].transpose(0, 3, 1, 2)), f32(rs)))
    cc = dataclasses.replace(cc, want=ref8.convolution(cc.layer, inputs)[0])
    g = ConvGeometry(n, h, h, c, k, 1, 1)
    y = cc.output(n, h, h)
    ws = np.full(max(tactic.workspace_bytes(g), 4) // 4, -7, np.int32)
    gate8 = SeGate8(gate, c, gate_stride, f16, sa, so)
    for launch in conv2d_s8_launches(q, pack_weights8(cc.wq), y, g, tactic, cc.epi, cc.rq, ws, cc.ldy, gate8):
        emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    cc.check(y, label=f"{tactic.name}: ")


@pytest.mark.parametrize("tactic,n,c,h,k,f16,residual,gate_stride", [
    pytest.param(Tactic8(Tile8(64, 64, 2, 2, 2)), 2, 40, 6, 24, True, True, 40, id="c40-two-images-residual"),
    pytest.param(Tactic8(Tile8(128, 32, 4, 1, 4)), 2, 72, 7, 16, True, False, 72, id="c72-narrow-out"),
    pytest.param(Tactic8(Tile8(32, 32, 2, 1, 4), 3), 3, 136, 3, 40, False, False, 136, id="c136-splitk3-f32"),
    pytest.param(Tactic8(Tile8(128, 128, 2, 4, 3, 8)), 2, 200, 5, 48, True, False, 208,
                 id="c200-long-rows-gate-stride-208"),
])
def test_gated_conv_equals_bridge_then_reference(emu, rng, tactic, n, c, h, k, f16, residual, gate_stride) -> None:
    _check_gated(emu, rng, tactic, n, c, h, k, f16, residual, gate_stride)


@pytest.mark.parametrize("tile", [TILES8_WG[0], TILES8_WG[-1]], ids=lambda t: f"{t.dims}s{t.stages}")
def test_gated_wgmma_conv_equals_bridge_then_reference(emu_wg, rng, tile) -> None:
    """The sm_90a tiles read the rewritten chunks from shared memory after ``fence.proxy.async``."""
    _check_gated(emu_wg, rng, Tactic8(tile), 2, 96, 6, 40, True, False, 96)


def test_gate_needs_a_1x1_convolution_of_one_group() -> None:
    g = ConvGeometry(1, 6, 6, 32, 16, 3, 3, (1, 1), (1, 1))
    gate = SeGate8(np.zeros((1, 32), np.float16), 32, 32, True, 0.1, 0.1)
    with pytest.raises(ValueError, match="1x1"):
        conv2d_s8_launches(np.zeros((1, 6, 6, 32), np.int8), np.zeros((16, 3, 3, 32), np.int8), None, g,
                           Tactic8(TILES8[0]), None, gate=gate)


def test_lowering_takes_the_gate_in_the_project_convolution(rng) -> None:
    net = nets.se_block_net(rng)
    low = lower(net, net.layers, list(net.outputs))
    labels = [o.label for o in low.ops]
    assert "se_mul_int8" not in labels and not any(la.startswith("quant_se_mul") for la in labels), labels
    proj = next(o for o in low.ops if o.label == "project")
    gate = proj.info["gate"]
    assert gate is not None and gate.channels == 40 and gate.f16
    assert gate.x in proj.reads and gate.gate in proj.reads


def test_pointwise_tactic_keeps_the_bridge(rng, monkeypatch) -> None:
    """A plan that gives the project convolution ``pw_s8`` (which takes no gate) keeps the bridge kernel."""
    monkeypatch.setattr(int8_pw, "pointwise8_runs", lambda g, ldy: True)
    net = nets.se_block_net(rng)
    low = lower(net, net.layers, list(net.outputs), tactics={"project": int8_pw.POINTWISE8.name})
    assert "se_mul_int8" in [o.label for o in low.ops]
    assert next(o for o in low.ops if o.label == "project").info["gate"] is None


def test_lowered_gate_equals_bridge_then_convolution(rng, tmp_path, monkeypatch, emu) -> None:
    """The gated project convolution as lowered, against the lowering's bridge kernel and plain
    convolution (the gate disabled), on the same int8 x and fp16 gate: the same output bytes."""
    net = nets.se_block_net(rng, c=72, k=40)
    gated = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(Int8Lowering, "_gate_in_tile_loads", lambda self, conv, gate, shape: False)
        plain = lower(net, net.layers, list(net.outputs))
    proj_g = next(o for o in gated.ops if o.label == "project")
    proj_p = next(o for o in plain.ops if o.label == "project")
    se = proj_g.info["gate"]
    q = np.zeros(gated.slots[se.x].phys_shape, np.int8)
    q[..., :72] = rng.integers(-128, 128, q[..., :72].shape, dtype=np.int8)
    gate_slot = gated.slots[se.gate]
    gate = np.zeros(gate_slot.phys_shape, np.float16)
    gate.reshape(2, -1)[:, :72] = rng.uniform(0, 1, (2, 72)).astype(np.float16)
    bufs = _run_gen(plain, ["se_mul_int8"], {se.x: q, se.gate: gate}, tmp_path / "p")
    xb = bufs[proj_p.info["x"]]
    assert (xb[..., :72] != 0).mean() > 0.5

    def run(op, x, gate8):
        g, info = op.info["geom"], op.info
        dev = DeviceEpilogue.upload(info["epi"], np)
        wk = (gated if gate8 else plain).slots[info["w"]].const
        y = np.full((g.n, g.p, g.q, info["ldy"]), 0x5A, np.int8)
        ws = np.zeros(max(info["tactic"].workspace_bytes(g), 4) // 4, np.int32)
        for launch in conv2d_s8_launches(x, np.ascontiguousarray(wk), y, g, info["tactic"], dev, None, ws,
                                         info["ldy"], gate8):
            emu.run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
        return y

    got = run(proj_g, q, SeGate8(gate.reshape(2, -1), se.channels, se.stride, se.f16, se.sa, se.so))
    want = run(proj_p, np.ascontiguousarray(xb), None)
    assert np.abs(want.astype(int)).max() > 10
    np.testing.assert_array_equal(got, want)

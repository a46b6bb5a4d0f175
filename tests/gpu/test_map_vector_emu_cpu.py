"""Generated map kernels with eight elements a thread (``gen_vec.map_vector``), without CUDA.

A DenseNet-style block (two convolutions, concatenations whose input boundaries fall inside an
8-channel vector and past the true channel count, a per-channel scale and ReLU, an NCHW -> NHWC
conversion, a row-major element-wise layer with a broadcast operand) is lowered as the GPU lowers
it (every map kernel that can be, vectorized) and every launch runs in the CUDA emulator on fresh
random data. The vectorized kernels must
give the one-element-a-thread kernels' bits exactly (each element takes the same float steps) and
float64 numpy at fp16 tolerance, and the padded channels must come out zero.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends.gpu.kernels import gen, gen_vec
from backends.gpu.kernels.gen_vec import map_vector, vector_loads
from backends.gpu.lower import lower
from backends.gpu.lowering import lowerer
from engine.ir.dtypes import Precision
from engine.ir.layers import ConcatenationParams, ScaleMode, ScaleParams
from engine.ir.network import Network

needs_emulator = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")
N, C, H, W = 2, 16, 5, 3


def dense_block(rng) -> tuple[Network, dict[str, np.ndarray]]:
    net = Network("dense")
    x = net.add_input("x", (N, C, H, W))
    w = {"k1": rng.standard_normal((24, C, 1, 1)) / 4, "b1": rng.standard_normal(24),
         "k2": rng.standard_normal((12, C, 3, 3)) / 12, "b2": rng.standard_normal(12),
         "s": rng.uniform(0.5, 2, 36), "t": rng.standard_normal(36),
         "s1": rng.uniform(0.5, 2, 24), "t1": rng.standard_normal(24), "row": rng.standard_normal(W * 8),
         "k3": rng.standard_normal((16, C, 1, 1)) / 4, "b3": rng.standard_normal(16),
         "s3": rng.uniform(0.5, 2, 40), "t3": rng.standard_normal(40)}
    w = {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}
    c1 = net.add_convolution(x, w["k1"], w["b1"], name="c1")
    c2 = net.add_convolution(x, w["k2"], w["b2"], padding=(1, 1), name="c2")
    cat = net.add_layer(ConcatenationParams(axis=1), [c1, c2], name="cat").outputs[0]  # 36 of 40 channels
    cat2 = net.add_layer(ConcatenationParams(axis=1), [c2, c1], name="cat2").outputs[0]  # 12 | 24: mid-vector
    bn = net.add_layer(ScaleParams(ScaleMode.CHANNEL), [cat], {"scale": w["s"], "shift": w["t"]}, name="bn")
    bn1 = net.add_layer(ScaleParams(ScaleMode.CHANNEL), [c1], {"scale": w["s1"], "shift": w["t1"]}, name="bn1")
    y = net.add_activation(bn.outputs[0], "relu", name="relu")
    c3 = net.add_convolution(x, w["k3"], w["b3"], name="c3")
    cat3 = net.add_layer(ConcatenationParams(axis=1), [c3, c1], name="cat3").outputs[0]  # 16 | 24: whole vectors
    bn3 = net.add_layer(ScaleParams(ScaleMode.CHANNEL), [cat3], {"scale": w["s3"], "shift": w["t3"]}, name="bn3")
    y3 = net.add_activation(bn3.outputs[0], "relu", name="relu3")
    flat = net.add_constant(w["row"].reshape(1, 1, W * 8), name="row")
    lin = net.add_input("z", (N, H, W * 8))
    e = net.add_elementwise(lin, flat, "prod", name="rowmul")
    for t in (y.name, cat2, e.name, bn1.outputs[0], y3.name):
        net.mark_output(t)
    for la in net.layers:
        la.precision = Precision.FP16
    return net, w


def conv_nchw(x: np.ndarray, k: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    r = k.shape[2]
    out = np.zeros((x.shape[0], k.shape[0], x.shape[2], x.shape[3]))
    for u in range(r):
        for v in range(r):
            out += np.einsum("nchw,kc->nkhw", xp[:, :, u:u + x.shape[2], v:v + x.shape[3]], k[:, :, u, v])
    return out + b[None, :, None, None]


@needs_emulator
def test_vector_map_kernels_match_scalar_ones_and_numpy(tmp_path, monkeypatch):
    rng = np.random.default_rng()
    net, w = dense_block(rng)
    feeds = {"x": rng.standard_normal((N, C, H, W)).astype(np.float16).astype(np.float32),
             "z": rng.standard_normal((N, H, W * 8)).astype(np.float16).astype(np.float32)}
    with monkeypatch.context() as m:  # eight a thread wherever the output allows, whatever the inputs
        m.setattr(lowerer, "map_vector", lambda shape, out, order=None, zero=None, ins=None, body="":
                  map_vector(shape, out, order, zero))
        low = lower(net, net.layers, list(net.outputs))
    vec_ops = [op.label for op in low.ops if op.kind == "gen" and f"yv[{8}]" in _kernel_source(low, op.kernel)]
    for label in ("to_nhwc_x", "cat", "cat2", "rowmul", "bn1"):
        assert any(lab.startswith(label) for lab in vec_ops), (label, vec_ops)
    ahead = [op.label for op in low.ops if op.kind == "gen"
             and ("xv0[" in _kernel_source(low, op.kernel) or "xs0[" in _kernel_source(low, op.kernel))]
    assert {"rowmul", "bn1", "bn3"} <= {lab.split("+")[0].split(":")[0] for lab in ahead}, ahead  # 16-byte loads
    # transposes and selects within a thread's eight (cat: 24 | 12, cat2: 12 | 24) read per element
    assert not any(lab.startswith(("cat", "to_nhwc", "bn:", "bn+")) or lab == "bn" for lab in ahead), ahead
    bn3_source = _kernel_source(low, next(op.kernel for op in low.ops if op.label.startswith("bn3")))
    # cat3's two inputs share one array, loaded once from the input the select picks
    assert bn3_source.count("if ((IT)l1 <") == 2 and "xs0[8]" in bn3_source, bn3_source
    assert bn3_source.count("reinterpret_cast<const uint4*>(p)") == 1, bn3_source
    bufs: dict[str, np.ndarray] = {}
    got = run_lowered(low, feeds, tmp_path / "vec", keep=bufs)
    padded = [n for n, s in low.slots.items() if s.layout == "nhwc" and s.shape[1] % 8 and n in bufs]
    assert len(padded) >= 2, padded  # the 3x3 convolution's 12 of 16 and the scaled ReLU's 36 of 40 channels
    for name in padded:  # written as zeros, not left at the emulator's NaNs
        s = low.slots[name]
        a = bufs[name].reshape(s.phys_shape)
        assert np.isfinite(a[..., :s.shape[1]]).all(), name
        np.testing.assert_array_equal(a[..., s.shape[1]:], 0, err_msg=name)
    with monkeypatch.context() as m:
        m.setattr(lowerer, "map_vector", lambda *a, **k: 1)
        scalar_low = lower(net, net.layers, list(net.outputs))
        assert not any("yv[" in _kernel_source(scalar_low, op.kernel) for op in scalar_low.ops if op.kind == "gen")
        plain = run_lowered(scalar_low, feeds, tmp_path / "scalar")
    ruled = lower(net, net.layers, list(net.outputs))  # the rule itself: bn3 vectorized, bn not
    vec_ruled = {op.label for op in ruled.ops if op.kind == "gen" and "yv[8]" in _kernel_source(ruled, op.kernel)}
    assert any(lab.startswith("bn3") for lab in vec_ruled) and not any(lab.startswith("bn:") or lab == "bn"
                                                                        for lab in vec_ruled), vec_ruled
    by_rule = run_lowered(ruled, feeds, tmp_path / "ruled")
    monkeypatch.setattr(gen_vec, "SELECT_LOADS", False)
    default = lower(net, net.layers, list(net.outputs))
    assert not any(op.label.startswith("bn3") and "yv[8]" in _kernel_source(default, op.kernel)
                   for op in default.ops if op.kind == "gen")  # its inputs read per element: one a thread
    for t in net.outputs:
        np.testing.assert_array_equal(got[t], plain[t], err_msg=t)
        np.testing.assert_array_equal(by_rule[t], plain[t], err_msg=t)
    x = feeds["x"].astype(np.float64)
    c1, c2 = conv_nchw(x, w["k1"], w["b1"], 0), conv_nchw(x, w["k2"], w["b2"], 1)
    cat = np.concatenate([c1, c2], axis=1)
    s, t = w["s"][None, :, None, None], w["t"][None, :, None, None]
    want = {net.layer("relu").outputs[0]: np.maximum(cat * s + t, 0),
            net.layer("cat2").outputs[0]: np.concatenate([c2, c1], axis=1),
            net.layer("rowmul").outputs[0]: feeds["z"] * w["row"],
            net.layer("bn1").outputs[0]: c1 * w["s1"][None, :, None, None] + w["t1"][None, :, None, None],
            net.layer("relu3").outputs[0]: np.maximum(np.concatenate([conv_nchw(x, w["k3"], w["b3"], 0), c1], axis=1)
                                                      * w["s3"][None, :, None, None] + w["t3"][None, :, None, None], 0)}
    for t, ref in want.items():
        assert got[t].shape == ref.shape, t
        np.testing.assert_allclose(got[t], ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max(), err_msg=t)


def test_map_vector_keeps_one_element_a_thread_only_for_inputs_it_cannot_load_ahead(monkeypatch):
    """Inputs along the output's fastest dim are loaded ahead as 16-byte words, others broadcast or
    are read across it: a vector kernel. An input along that dim that cannot be loaded ahead (a
    concatenation's input under its select, a misaligned slice) keeps one element a thread."""
    f16 = gen.Operand("float16", (24, 1))
    along, across = gen.Operand("float16", (24, 1)), gen.Operand("float16", (1, 4))
    bcast, row = gen.Operand("float32", (0, 0)), gen.Operand("float32", (0, 1))
    assert map_vector((4, 24), f16, ins=[along, bcast, row], body="y = X0 * X1 + X2;") == 8
    assert vector_loads((4, 24), None, None, [along, bcast, row], "y = X0 * X1 + X2;") == [0, 2]
    assert map_vector((4, 24), f16, ins=[along, across], body="y = X0 + X1;") == 8
    assert map_vector((4, 24), f16, ins=[gen.Operand("float16", (0, 0))], body="RAW yr = LD0(l0 * 3);") == 8
    selected = gen.Operand("float16", (24, 1), base=-8, selected_on=(1,))
    assert map_vector((4, 24), f16, ins=[along, selected], body="y = l1 < 8 ? X0 : X1;") == 1
    rows = gen.Operand("float16", (24, 1), base=-48, selected_on=(0,))  # one pick for a thread's eight
    assert map_vector((4, 24), f16, ins=[along, rows], body="y = l0 < 2 ? X0 : X1;") == 8
    assert vector_loads((4, 24), None, None, [along, rows], "y = l0 < 2 ? X0 : X1;") == [0]
    half = gen.Operand("float16", (24, 1), base=-8, selected_on=(1,), select_range=("(IT)l1", 8, 24))
    assert map_vector((4, 24), f16, ins=[along, half], body="y = (IT)l1 < 8 ? X0 : X1;") == 8  # default
    monkeypatch.setattr(gen_vec, "SELECT_LOADS", False)
    assert map_vector((4, 24), f16, ins=[along, half], body="y = (IT)l1 < 8 ? X0 : X1;") == 1
    monkeypatch.setattr(gen_vec, "SELECT_LOADS", True)
    odd = gen.Operand("float16", (24, 1), base=-12, selected_on=(1,), select_range=("(IT)l1", 12, 24))
    assert vector_loads((4, 24), None, None, [along, odd], "y = (IT)l1 < 12 ? X0 : X1;") == [0]  # mid-vector
    assert map_vector((4, 24), f16, ins=[gen.Operand("float16", (24, 1), base=4)], body="y = X0;") == 1
    assert map_vector((4, 24), f16, ins=[gen.Operand("float16", (28, 1))], body="y = X0;") == 1
    assert map_vector((4, 24), f16, ins=[gen.Operand("float32r", (24, 1))], body="y = X0;") == 8
    assert vector_loads((4, 24), None, (1, 32), [along], "y = X0;") == []  # padded past the input's end


def _kernel_source(low, kernel: str) -> str:
    start = low.source.index(f" {kernel}(")
    return low.source[start:low.source.index("\n}\n", start)]


def test_map_vector_refuses_what_it_cannot_store_whole():
    f16 = gen.Operand("float16", (40 * 15, 1, 3 * 40, 40))
    assert map_vector((2, 36, 5, 3), f16, [0, 2, 3, 1], (1, 40)) == 8
    assert map_vector((2, 36, 5, 3), f16, [0, 2, 3, 1], (1, 36)) == 1  # 36 is no multiple of 8
    assert map_vector((4, 24), gen.Operand("float16", (24, 1))) == 8
    assert map_vector((4, 20), gen.Operand("float16", (20, 1))) == 1
    assert map_vector((4, 24), gen.Operand("float16", (24, 1), base=4)) == 1  # not 16-byte aligned
    assert map_vector((4, 24), gen.Operand("float16", (1, 4))) == 1  # fastest dim not unit-stride
    assert map_vector((4, 24), gen.Operand("int8", (24, 1))) == 1
    assert map_vector((3, 24), gen.Operand("float32", (28, 1))) == 1  # rows 28 apart: 16-byte breaks
    assert map_vector((1, 24), gen.Operand("float32", (28, 1))) == 8  # one row
    with pytest.raises(ValueError, match="do not fit"):
        gen.map_kernel("k", (4, 20), gen.Operand("float16", (20, 1)), [], "y = 0.f;", vec=8)

"""Two fully connected layers in a row as one fused MLP launch (``kernels/mlp_src``).

``FC2(act1(FC1(x)))`` where FC1's output is read by FC2 alone and both run on the tensor cores
(FP16, channel counts multiples of 8) with weights that fit the kernel's shared memory
(``mlp_src.supported``; ConvNeXt's first stage): the hidden tensor then never goes to memory. FC2
keeps its own fusions: the residual add (and ConvNeXt's permute before it) that ``fc_residual``
folds into its epilogue, and its activation.

Applied where the layer has at least ``MIN_BLOCKS`` row blocks (one per SM of an H100): each
block walks every hidden unit for its rows, so on few rows the two tiled GEMMs, which spread the
hidden units over the GPU as well, finish first (ConvNeXt-T at batch 1 keeps them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import mlp_src
from backends.gpu.lowering.conv import _fold_act, tensor_core_fc
from backends.gpu.lowering.slots import Op
from engine.ir.layers import LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer

MIN_BLOCKS = 132


@dataclass(frozen=True)
class MlpMatch:
    """FC1 (absorbed: lowered by nothing else) and FC2, which the fused launch replaces."""

    fc1: Layer
    fc2: Layer
    geom: mlp_src.MlpGeometry


def _geometry(lw: Lowerer, fc1: Layer, fc2: Layer) -> mlp_src.MlpGeometry | None:
    h, c = fc1.weights["kernel"].shape
    co, h2 = fc2.weights["kernel"].shape
    if h2 != h:
        return None
    m = math.prod(lw.net.tensors[fc1.inputs[0]].shape[:-1])
    residual = fc2.name in lw.fc_residuals
    g = mlp_src.MlpGeometry(m, c, h, co, _fold_act(fc1.params.activation), _fold_act(fc2.params.activation),
                            residual)
    if mlp_src.supported(g) is not None or g.row_blocks < MIN_BLOCKS:
        return None
    return g


def find_mlps(lw: Lowerer) -> dict[str, MlpMatch]:
    """The fused MLPs of the segment, by the name of their second layer (call after the FC
    residuals are found: the geometry says whether FC2 adds one)."""
    segment = {la.name for la in lw.layers}
    found: dict[str, MlpMatch] = {}
    for fc1 in lw.layers:
        if fc1.kind is not LayerKind.FULLY_CONNECTED or not tensor_core_fc(fc1):
            continue
        hidden = fc1.outputs[0]
        fc2 = lw.sole_reader(hidden)
        if (fc2 is None or fc2.name not in segment or not tensor_core_fc(fc2) or fc2.inputs[0] != hidden
                or lw.dtypes.get(hidden) != "float16" or fc2.name in found):
            continue
        g = _geometry(lw, fc1, fc2)
        if g is not None:
            found[fc2.name] = MlpMatch(fc1, fc2, g)
    return found


def _padded(w: np.ndarray, rows: int, cols: int, dtype) -> np.ndarray:
    out = np.zeros((rows, cols), dtype)
    out[:w.shape[0], :w.shape[1]] = w
    return out


def lower_mlp(lw: Lowerer, m: MlpMatch) -> None:
    """One launch of the fused kernel writing FC2's output (or the residual add's FC2 absorbs)."""
    g, fc1, fc2 = m.geom, m.fc1, m.fc2
    xs = lw.linear(fc1.inputs[0], "float16")
    res, out = lw.fc_output(fc2)
    add = lw.fc_residuals.get(fc2.name)
    zeros = np.zeros
    b1 = fc1.weights.get("bias", zeros(g.h, np.float32)).astype(np.float16).astype(np.float32)
    b2 = fc2.weights.get("bias", zeros(g.co, np.float32)).astype(np.float16).astype(np.float32)
    w1 = lw.const_fp16(f"{fc1.name}/kernel_mlp", _padded(fc1.weights["kernel"], g.hp, g.cp, np.float32))
    w2 = lw.const_fp16(f"{fc2.name}/kernel_mlp", _padded(fc2.weights["kernel"], g.cop, g.hp, np.float32))
    c1 = lw.const(f"{fc1.name}/bias_mlp", _padded(b1[None], 1, g.hp, np.float32)[0], False)
    c2 = lw.const(f"{fc2.name}/bias_mlp", _padded(b2[None], 1, g.cop, np.float32)[0], False)
    kname = lw.kernel_name(fc2.name)
    lw.src.append(mlp_src.mlp_kernel(kname, g))
    reads = [xs, w1.name, c1.name, w2.name, c2.name] + ([res] if res else [])
    label = " + ".join([fc1.name, fc2.name] + ([add[0].name] if add else []))
    lw.ops.append(Op(label, "gen", reads, [out.name], [out.name, *reads], g.grid, kname, block=32 * mlp_src.WARPS,
                     smem=g.smem_bytes))

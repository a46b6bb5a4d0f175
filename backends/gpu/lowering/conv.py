"""GPU lowering of the convolution family: convolution, deconvolution, fully connected, matrix
multiply.

FP16 group-1 convolutions (and FP16 fully connected layers whose sizes are multiples of 8) run on
the tensor-core implicit-GEMM kernel ('conv', tactic from the build or the heuristic); a stride-2
stem on few channels first goes through a 2x2 space-to-depth; FP16 depthwise convolutions have
their own NHWC kernel; FP16 grouped convolutions run on the tensor-core kernel as one implicit GEMM
per group where each group has a multiple of 8 input and output channels, after merging up to 8
adjacent groups into one with block-diagonal weights where it has not (``layout.group_merge_factor``),
or on the direct grouped kernel ('conv_gdirect', ``kernels.grouped``) where the build timed it faster
or no merge applies. Any tensor-core convolution may instead take a whole-layer tactic the build
timed faster: cuBLAS, cuBLASLt, a GEMV, or cuDNN's fused convolution ('conv_cudnn', where the
library is installed); everything else is a generated direct (or transposed) convolution or a generated matrix product.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu import activations
from backends.gpu.kernels import cublas, cublaslt, cudnn, gen, grouped
from backends.gpu.kernels.conv import (
    CUBLAS_TACTIC,
    CUBLASLT_TACTIC,
    GEMV_TACTIC,
    MAX_GRID_Y,
    TILES,
    TILES_WG,
    ConvGeometry,
    ConvTactic,
    Tile,
    TileWg,
    cublas_eligible,
    cublaslt_eligible,
    gemv_eligible,
    heuristic_tactic,
    parse_tile_tactic,
    wgmma_usable,
)
from backends.gpu.layout import group_merge_factor, merge_groups, round_up
from backends.gpu.lowering.slots import FLOAT, Dtypes, Op, Slot, input_dtypes, prec
from backends.gpu.space_to_depth import space_to_depth_conv, space_to_depth_kernel
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, LayerKind
from engine.ir.network import Layer, Network

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


def check_conv(layer: Layer, network: Network, dtypes: Dtypes) -> str | None:
    rank = len(network.tensors[layer.inputs[0]].shape)
    if rank != 4:
        return f"{rank - 2}-D {layer.kind.value} has no GPU kernel (2-D only)"
    return None if all(d in FLOAT for d in input_dtypes(layer, dtypes)) else "non-float convolution input"


def _fold_act(spec: ActivationSpec | None) -> tuple[int, float, float]:
    return activations.act_args(spec)


def parse_tactic(name: str) -> ConvTactic | None:
    """Inverse of ``ConvTactic.name`` ('igemm_64x128_w2x2_s4_k1', 'igemm_128x256x64_w2x4_s3_k1',
    'wgmma_128x256x64_w8x1_s4_k1'); None when it does not parse or names a tile the modules do
    not compile."""
    return (parse_tile_tactic(name, "igemm", Tile, TILES, ConvTactic)
            or parse_tile_tactic(name, "wgmma", TileWg, TILES_WG, ConvTactic))


def _matrix(shape: tuple[int, ...], strides: tuple[int, ...], t: bool, is_a: bool
            ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A MatMul operand's (shape, strides) as a batch of matrices: a vector becomes a row (A) or a
    column (B), a transposed operand swaps its last two dims."""
    shape_l, st = list(shape), list(strides)
    if len(shape_l) == 1:
        shape_l, st = ([1, shape_l[0]], [0, st[0]]) if is_a else ([shape_l[0], 1], [st[0], 0])
    elif t:
        shape_l[-1], shape_l[-2] = shape_l[-2], shape_l[-1]
        st[-1], st[-2] = st[-2], st[-1]
    return tuple(shape_l), tuple(st)


def lower_matrix_multiply(lw: Lowerer, layer: Layer) -> None:
    from backends.gpu.lowering.movement import input_view

    p = layer.params
    a, b = (lw.slots[t] for t in layer.inputs)
    out = lw.new_slot(layer.outputs[0])
    fp16 = prec(layer) is Precision.FP16
    sa, ta = _matrix(a.shape, a.strides, p.transpose_a, True)
    sb, tb = _matrix(b.shape, b.strides, p.transpose_b, False)
    batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    m, k, n = sa[-2], sa[-1], sb[-1]
    ab = gen.broadcast_strides(sa[:-2], ta[:-2], batch) + ta[-2:]
    bb = gen.broadcast_strides(sb[:-2], tb[:-2], batch) + tb[-2:]
    full = (*batch, m, n)
    if _cublas_matmul(lw, layer, a, b, out, batch, (m, n, k), ab, bb):
        return
    # the generated kernel reads each operand through its chain's view: a gather or slice in
    # front (an attention's V split off the projection) needs no copy
    operands = []
    for t, transposed, is_a in ((layer.inputs[0], p.transpose_a, True), (layer.inputs[1], p.transpose_b, False)):
        v = input_view(lw, t)
        shape, st = _matrix(v.shape, v.strides, transposed, is_a)
        strides = gen.broadcast_strides(shape[:-2], st[:-2], batch) + st[-2:]
        root = lw.slots[v.root]
        operands.append((root, gen.Operand(root.operand(None, fp16).dtype, strides, v.base)))
    (ra, oa), (rb, ob) = operands
    yop = gen.Operand(out.dtype, tuple(gen.row_major(full)))
    kname = lw.kernel_name(layer.name)
    src, total = gen.matmul_kernel(kname, batch, m, n, k, oa, ob, yop,
                                   span=max(ra.elements, rb.elements, a.elements, b.elements, out.elements))
    lw.emit(layer.name, kname, src, [ra.name, rb.name], [out.name], (max(1, -(-total // 256)),),
            [ra.name, rb.name, out.name])


def _cublas_matmul(lw: Lowerer, layer: Layer, a: Slot, b: Slot, out: Slot, batch: tuple[int, ...],
                   mnk: tuple[int, int, int], a_strides, b_strides) -> bool:
    """FP16 products of two fp16 tensors go to cuBLAS (tensor cores, captured in the CUDA graph)
    where their strides fit one strided-batched call; False leaves the layer to the generated kernel."""
    if prec(layer) is not Precision.FP16 or not a.dtype == b.dtype == out.dtype == "float16":
        return False
    plan = cublas.plan_gemm(batch, *mnk, tuple(a_strides), tuple(b_strides))
    if plan is None or not cublas.available():
        return False
    lw.ops.append(Op(layer.name, "gemm_cublas", [a.name, b.name], [out.name],
                     info={"x": a.name, "w": b.name, "y": out.name, "plan": plan}))
    return True


def tensor_core_fc(layer: Layer) -> bool:
    """An FP16 FC the 1x1-convolution kernels run: C and K multiples of 8."""
    if layer.kind is not LayerKind.FULLY_CONNECTED:
        return False
    kout, c = layer.weights["kernel"].shape
    return prec(layer) is Precision.FP16 and c % 8 == 0 and kout % 8 == 0


def lower_fully_connected(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    x = lw.slots[layer.inputs[0]]
    fp16 = prec(layer) is Precision.FP16
    w = layer.weights["kernel"]
    kout, c = w.shape
    m = math.prod(x.shape[:-1])
    act = _fold_act(p.activation)
    if tensor_core_fc(layer):
        xs = lw.linear(layer.inputs[0], "float16")
        res, out = lw.fc_output(layer)  # an add folded into the epilogue: the FC writes its output
        g = ConvGeometry(m, 1, 1, c, kout, 1, 1)
        conv_op(lw, layer, g, xs, out.name, w[:, :, None, None], layer.weights.get("bias"), act, res)
        return
    xs = lw.slots[lw.linear(layer.inputs[0])]
    out = lw.new_slot(layer.outputs[0])
    wk = lw.const(f"{layer.name}/kernel", w, fp16)
    bias = layer.weights.get("bias")
    bk = lw.const(f"{layer.name}/bias", bias, fp16) if bias is not None else None
    kname = lw.kernel_name(layer.name)
    src, total = gen.matmul_kernel(kname, (), m, kout, c, gen.Operand(xs.operand(None, fp16).dtype, (c, 1)),
                                   gen.Operand("float32", (1, c)), gen.Operand(out.dtype, (kout, 1)),
                                   gen.Operand("float32", (1,)) if bk else None, act,
                                   span=max(xs.elements, out.elements, wk.elements))
    reads = [xs.name, wk.name] + ([bk.name] if bk else [])
    lw.emit(layer.name, kname, src, reads, [out.name], (max(1, -(-total // 256)),),
            [xs.name, wk.name, out.name] + ([bk.name] if bk else []))


def conv_op(lw: Lowerer, layer: Layer, g: ConvGeometry, xs: str, ys: str, kernel: np.ndarray, bias, act,
            res: str | None, scale: str | None = None, groups: int | None = None,
            s2d_of: ConvGeometry | None = None) -> None:
    """The tensor-core convolution of ``g`` (or a whole-layer tactic the build chose); ``groups``:
    a grouped layer's true group count before merging, which the tactic timing reads; ``s2d_of``:
    the layer's own geometry where ``g`` is its space-to-depth form (the tactic timing also times
    cuDNN on the layer's own geometry, which the lowering then keeps)."""
    from backends.gpu.layout import pack_conv_weights, pad_bias

    tactic = parse_tactic(lw.tactics.get(layer.name, "")) or heuristic_tactic(g)
    if isinstance(tactic.tile, TileWg) and not wgmma_usable():  # a Hopper plan on another GPU
        tactic = heuristic_tactic(g)
    wk = lw.const_fp16(f"{layer.name}/kernel_krsc", pack_conv_weights(kernel.astype(np.float32)))
    whole = _whole_layer_op(lw.tactics.get(layer.name), g, act, scale)
    if whole in ("conv_cublaslt", "conv_cudnn"):  # these libraries' bias has the output's type: fp16, K of it
        bk = lw.const_fp16(f"{layer.name}/bias_fp16", pad_bias(bias, g.k)[:g.k])
    else:
        bk = lw.const_bias(f"{layer.name}/bias_padded", bias, g.k)
    lw.convs[layer.name] = g
    reads = [xs, wk.name, bk.name] + ([res] if res else []) + ([scale] if scale else [])
    if whole is not None:
        info = {"geom": g, "act": act, "x": xs, "w": wk.name, "b": bk.name, "res": res, "y": ys}
        if whole == "conv_cudnn":  # _whole_layer_op checked that cuDNN runs this algorithm here
            info["algo"] = cudnn.parse_tactic(lw.tactics.get(layer.name))
        lw.ops.append(Op(layer.name, whole, reads, [ys], info=info))
        return
    lw.ops.append(Op(layer.name, "conv", reads, [ys], info={"geom": g, "tactic": tactic, "act": act,
                                                            "x": xs, "w": wk.name, "b": bk.name, "res": res,
                                                            "y": ys, "scale": scale, "groups": groups or g.groups,
                                                            "s2d_of": s2d_of},
                     workspace=tactic.workspace_bytes(g)))


def _whole_layer_op(chosen: str | None, g: ConvGeometry, act: tuple[int, float, float],
                    scale: str | None) -> str | None:
    """The op of a whole-layer tactic the build timed faster than every tile, where it can take
    the layer here; None for the tiles (and always with a squeeze-excitation scale, which only
    the tiles' loads apply)."""
    if scale is not None:
        return None
    if chosen == GEMV_TACTIC and gemv_eligible(g):
        return "conv_gemv"
    if chosen == CUBLAS_TACTIC and cublas_eligible(g) and cublas.available():
        return "conv_cublas"
    if chosen == CUBLASLT_TACTIC and cublaslt_eligible(g, act) and cublaslt.available():
        return "conv_cublaslt"
    if _cudnn_algo(chosen, g, act) is not None:
        return "conv_cudnn"
    return None


def _cudnn_algo(chosen: str | None, g: ConvGeometry, act: tuple[int, float, float]) -> int | None:
    """The algorithm of a chosen ``cudnn_a<algo>`` tactic where cuDNN runs it for this layer here;
    None for any other tactic, and where cuDNN is missing or offers other algorithms (a plan built
    where it was keeps the tiles' heuristic tactic)."""
    algo = cudnn.parse_tactic(chosen)
    if algo is None:
        return None
    try:
        return algo if algo in cudnn.algorithms(g, act[0]) else None
    except Exception:  # the library loads but cannot run here (no device)
        return None


def _s2d_input(lw: Lowerer, tensor: str, g: ConvGeometry) -> tuple[str, ConvGeometry] | None:
    """An fp16 NHWC slot with the 2x2 space-to-depth of a float32 NCHW ``tensor`` and the stride-1
    geometry that reads it (``space_to_depth.space_to_depth_conv``), or None where that does not apply."""
    g2 = space_to_depth_conv(g)
    src = lw.slots.get(tensor)
    if g2 is None or src is None or src.layout != "linear" or src.dtype != "float32" or len(src.shape) != 4:
        return None
    name = f"{tensor}@s2d"
    if name not in lw.slots:
        out = Slot(name, (g2.n, g2.c, g2.h, g2.w), "float16", "nhwc")
        lw.slots[name] = out
        lw.ops.append(Op(f"to_s2d_{tensor}", "s2d", [src.name], [name],
                         info={"x": src.name, "y": name, "shape": src.shape}))
    return name, g2


def _patch_input(lw: Lowerer, tensor: str, g: ConvGeometry) -> tuple[str, ConvGeometry] | None:
    """A convolution whose kernel is its stride, unpadded (a patch embedding: ViT's 16x16/16,
    ConvNeXt's 4x4/4 stem and 2x2/2 downsamplings) is a 1x1 convolution over the input's patches:
    an fp16 NHWC slot with channel (c·R + u)·S + v of pixel (p, q) = x[c, p·R + u, q·S + v] (one
    gather, from any float input layout) and the 1x1 geometry over it; None where it does not apply.
    The weights reshape as they are: (K, C, R, S) -> (K, C·R·S, 1, 1), the same products."""
    r, s = g.r, g.s
    if ((r, s) != tuple(g.stride) or r * s < 4 or tuple(g.dilation) != (1, 1) or any(g.pad) or any(g.pad_end or (0, 0))
            or g.c * r * s % 8):
        return None
    src = lw.slots.get(tensor)
    if src is None or len(src.shape) != 4 or src.dtype not in ("float16", "float32"):
        return None
    name = f"{tensor}@patches{r}x{s}"
    if name not in lw.slots:
        out = Slot(name, (g.n, g.c * r * s, g.p, g.q), "float16", "nhwc")
        lw.slots[name] = out
        st = src.strides
        body = (f"const IT c = l1 / {r * s}, u = (l1 / {s}) % {r}, v = l1 % {s}; "
                f"RAW yr = LD0((IT)l0 * {st[0]} + c * {st[1]} + ((IT)l2 * {r} + u) * {st[2]} "
                f"+ ((IT)l3 * {s} + v) * {st[3]});")
        lw.emit_map(f"to_patches_{tensor}", out, [(src.name, gen.Operand(src.dtype, (0, 0, 0, 0)))], body,
                    span=src.elements)
    return name, ConvGeometry(g.n, g.p, g.q, g.c * r * s, g.k, 1, 1)


def lower_convolution(lw: Lowerer, layer: Layer) -> None:
    p = layer.params
    c = lw.net.tensors[layer.inputs[0]].shape[1]  # an SE-scaled input has no slot
    kout = p.num_output_maps
    act = _fold_act(p.activation)
    fp16 = prec(layer) is Precision.FP16
    res_t = layer.inputs[1] if p.residual else None
    kernel = layer.weights["kernel"]
    bias = layer.weights.get("bias")
    if fp16 and p.groups == 1:
        g = layer_geometry(layer, lw.net)
        se = lw.se_scales.get(layer.inputs[0])
        patches = None if se else _patch_input(lw, layer.inputs[0], g)
        if patches is not None:
            xs, g1 = patches
            res = lw.nhwc(res_t) if res_t else None
            out = lw.new_slot(layer.outputs[0], "nhwc")
            conv_op(lw, layer, g1, xs, out.name, np.asarray(kernel).reshape(kout, -1, 1, 1), bias, act, res)
            return
        own = _cudnn_algo(lw.tactics.get(layer.name), g, act) is not None  # cuDNN takes the layer as it is
        s2d = None if se or own else _s2d_input(lw, layer.inputs[0], g)
        if s2d is not None:  # a stride-2 conv on <= 4 channels (a stem): stride 1 on 4C
            xs, g2 = s2d
            kernel = space_to_depth_kernel(np.asarray(kernel, np.float32), g)
            res = lw.nhwc(res_t) if res_t else None
            out = lw.new_slot(layer.outputs[0], "nhwc")
            conv_op(lw, layer, g2, xs, out.name, kernel, bias, act, res, s2d_of=g)
            return
        xs = lw.nhwc(se[0] if se else layer.inputs[0])
        scale = lw.nhwc(se[1]) if se else None
        res = lw.nhwc(res_t) if res_t else None
        out = lw.new_slot(layer.outputs[0], "nhwc")
        conv_op(lw, layer, g, xs, out.name, kernel, bias, act, res, scale)
        return
    if fp16 and p.groups == c == kout:
        from backends.gpu.layout import pack_depthwise_weights

        g = layer_geometry(layer, lw.net)
        xs, res, out = _nhwc_operands(lw, layer)
        wk = lw.const_fp16(f"{layer.name}/kernel_rsc", pack_depthwise_weights(kernel.astype(np.float32)))
        bk = lw.const_bias(f"{layer.name}/bias_padded", bias, kout)
        lw.ops.append(Op(layer.name, "depthwise", [xs, wk.name, bk.name] + ([res] if res else []), [out.name],
                         info={"geom": g, "act": act, "x": xs, "w": wk.name, "b": bk.name, "res": res,
                                 "y": out.name}))
        return
    if fp16 and p.groups > 1 and _grouped(lw, layer):
        return
    _direct(lw, layer, transposed=False)


def _nhwc_operands(lw: Lowerer, layer: Layer) -> tuple[str, str | None, Slot]:
    """(input, residual or None, a new output slot) of a convolution, all NHWC."""
    res_t = layer.inputs[1] if layer.params.residual else None
    return lw.nhwc(layer.inputs[0]), (lw.nhwc(res_t) if res_t else None), lw.new_slot(layer.outputs[0], "nhwc")


def layer_geometry(layer: Layer, network: Network) -> ConvGeometry:
    """A convolution's sizes with ``groups`` left at 1 (``ConvGeometry`` admits only groups of 8
    channels); the direct grouped kernel takes the true group count beside it."""
    p = layer.params
    n, c, h, w = network.tensors[layer.inputs[0]].shape
    return ConvGeometry(n, h, w, c, p.num_output_maps, *p.kernel, tuple(p.stride), tuple(p.pre_padding),
                        tuple(p.dilation), tuple(p.post_padding))


def grouped_geometry(layer: Layer, network: Network) -> tuple[ConvGeometry, int] | None:
    """The tensor-core geometry of an FP16 grouped convolution and the number of adjacent groups
    merged into each of its groups (``layout.group_merge_factor``), or None where it keeps the
    direct kernel (per-group channels that no merge of at most 8 groups makes multiples of 8)."""
    p = layer.params
    n, c, h, w = network.tensors[layer.inputs[0]].shape
    kout = p.num_output_maps
    if p.groups <= 1 or c % p.groups or kout % p.groups:
        return None
    m = group_merge_factor(p.groups, c // p.groups, kout // p.groups)
    if m is None:
        return None
    g = ConvGeometry(n, h, w, c, kout, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
                     tuple(p.post_padding), groups=p.groups // m)
    return (g, m) if g.col_blocks(32) <= MAX_GRID_Y else None


def _grouped(lw: Lowerer, layer: Layer) -> bool:
    """A grouped convolution on the tensor-core kernel (weights packed per group, KRSC), or on the
    direct grouped kernel where the build's tactic is a ``gdirect`` one that applies, or where no
    merge makes the groups tensor-core sized (``grouped.heuristic_gdirect``: it replaces the
    generated direct kernel, which reads every input from global memory per output); False where
    neither qualifies."""
    found = grouped_geometry(layer, lw.net)
    groups, full = layer.params.groups, layer_geometry(layer, lw.net)
    direct_tactic = grouped.parse_gdirect(lw.tactics.get(layer.name))
    if found is None:
        direct_tactic = direct_tactic or grouped.heuristic_gdirect(full, groups)
    if direct_tactic is not None and direct_tactic in grouped.grouped_direct_tactics(full, groups):
        _grouped_direct(lw, layer, full, direct_tactic)
        return True
    if found is None:
        return False
    g, m = found
    kernel = np.asarray(layer.weights["kernel"], np.float32)
    if m > 1:
        kernel = merge_groups(kernel, groups, m)
    xs, res, out = _nhwc_operands(lw, layer)
    conv_op(lw, layer, g, xs, out.name, kernel, layer.weights.get("bias"), _fold_act(layer.params.activation), res,
            groups=groups)
    return True


def _grouped_direct(lw: Lowerer, layer: Layer, g: ConvGeometry, tactic: grouped.GroupedDirectTactic) -> None:
    """The 'conv_gdirect' op of ``g`` (``layer_geometry``): weights unmerged, [G][R][S][Cg][Kg] fp16,
    bias fp32 padded to Kp."""
    groups = layer.params.groups
    wk = lw.const_fp16(f"{layer.name}/kernel_grsck",
                       grouped.pack_grouped_weights(np.asarray(layer.weights["kernel"], np.float32), groups))
    bk = lw.const_bias(f"{layer.name}/bias_padded", layer.weights.get("bias"), g.k)
    xs, res, out = _nhwc_operands(lw, layer)
    lw.ops.append(Op(layer.name, "conv_gdirect", [xs, wk.name, bk.name] + ([res] if res else []), [out.name],
                     info={"geom": g, "groups": groups, "tactic": tactic, "act": _fold_act(layer.params.activation),
                           "x": xs, "w": wk.name, "b": bk.name, "res": res, "y": out.name}))


def lower_deconvolution(lw: Lowerer, layer: Layer) -> None:
    if not _deconv_as_gemm(lw, layer):
        _direct(lw, layer, transposed=True)


def _deconv_as_gemm(lw: Lowerer, layer: Layer) -> bool:
    """An FP16 2-D transposed convolution whose kernel is its stride, unpadded and ungrouped (a
    U-Net decoder's 2x2/2 up-convolution) as a tensor-core 1x1 convolution to K·R·S channels and a
    depth-to-space copy: output pixel (p·R + u, q·S + v) of channel k is column (u·S + v)·K + k of
    input pixel (p, q), with k's bias; every output has exactly one tap, so the sums and the
    activation are the same. The direct kernel took C·R·S fp32 multiply-adds a thread on CUDA cores."""
    p = layer.params
    x_shape = lw.net.tensors[layer.inputs[0]].shape
    if (prec(layer) is not Precision.FP16 or len(x_shape) != 4 or p.groups != 1 or getattr(p, "residual", False)
            or tuple(p.kernel) != tuple(p.stride) or any(p.pre_padding) or any(p.post_padding)
            or any(p.output_padding or ()) or tuple(p.dilation) != (1, 1)):
        return False
    n, c, h, w = x_shape
    r, s = p.kernel
    k = p.num_output_maps
    out_shape = lw.net.tensors[layer.outputs[0]].shape
    if tuple(out_shape) != (n, k, h * r, w * s):
        return False
    kernel = np.asarray(layer.weights["kernel"], np.float32)  # (C, K, R, S)
    gemm_w = kernel.transpose(2, 3, 1, 0).reshape(r * s * k, c, 1, 1)  # row (u·S + v)·K + k
    bias = layer.weights.get("bias")
    gemm_b = None if bias is None else np.tile(np.asarray(bias, np.float32), r * s)
    g = ConvGeometry(n, h, w, c, r * s * k, 1, 1)
    cols = Slot(f"{layer.outputs[0]}@cols", (n, r * s * k, h, w), "float16", "nhwc")
    lw.slots[cols.name] = cols
    conv_op(lw, layer, g, lw.nhwc(layer.inputs[0]), cols.name, gemm_w, gemm_b, _fold_act(p.activation), None)
    out = lw.new_slot(layer.outputs[0], "nhwc")
    st = cols.strides
    body = (f"const IT p = l2 / {r}, u = l2 % {r}, q = l3 / {s}, v = l3 % {s}; "
            f"RAW yr = LD0((IT)l0 * {st[0]} + ((u * {s} + v) * {k} + (IT)l1) * {st[1]} + p * {st[2]} + q * {st[3]});")
    lw.emit_map(f"{layer.name}/depth_to_space", out, [(cols.name, gen.Operand("float16", (0, 0, 0, 0)))], body,
                span=cols.elements)
    return True


def _direct(lw: Lowerer, layer: Layer, transposed: bool) -> None:
    p = layer.params
    x = lw.slots[layer.inputs[0]]
    fp16 = prec(layer) is Precision.FP16
    out = lw.new_slot(layer.outputs[0], "nhwc" if x.layout == "nhwc" and fp16 else "linear")
    n, c, h, w = x.shape
    _, kout, oh, ow = out.shape
    wk = lw.const(f"{layer.name}/kernel", layer.weights["kernel"], fp16)
    bias = layer.weights.get("bias")
    bk = lw.const(f"{layer.name}/bias", bias if bias is not None else np.zeros(kout, np.float32), fp16)
    res = lw.slots[layer.inputs[1]] if getattr(p, "residual", False) else None
    kname = lw.kernel_name(layer.name)
    src, total = gen.direct_conv_kernel(
        kname, n, c, h, w, kout, oh, ow, *p.kernel, tuple(p.stride), tuple(p.pre_padding), tuple(p.dilation),
        p.groups, x.operand(None, fp16), gen.Operand("float32", ()), gen.Operand(out.dtype, out.strides),
        True, res.operand(None, fp16) if res else None, _fold_act(p.activation), transposed,
        span=max(x.elements, out.elements))
    reads = [x.name, wk.name, bk.name] + ([res.name] if res else [])
    args = [x.name, wk.name, out.name, bk.name] + ([res.name] if res else [])
    lw.emit(layer.name, kname, src, reads, [out.name], (max(1, -(-total // 256)),), args)
    if out.layout == "nhwc" and out.shape[1] % 8:
        _zero_pad(lw, out)


def _zero_pad(lw: Lowerer, out: Slot) -> None:
    """Padded channels of an NHWC tensor written by a kernel that iterates true channels only."""
    n, c, h, w = out.shape
    cp = round_up(c, 8)
    kname = lw.kernel_name(f"zeropad_{out.name}")
    pad_op = gen.Operand(out.dtype, (h * w * cp, 1, w * cp, cp), c)
    src = gen.map_kernel(kname, (n, cp - c, h, w), pad_op, [], f"RAW yr = {gen.store(out.dtype, '0.f')};",
                         [0, 2, 3, 1], None, out.elements)
    lw.emit(f"zeropad_{out.name}", kname, src, [], [out.name], gen.map_grid((n, cp - c, h, w)), [out.name])

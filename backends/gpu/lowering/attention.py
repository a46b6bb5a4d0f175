"""Attention blocks found among a segment's layers and lowered as one fused kernel.

The pattern, as exporters write scaled dot-product attention::

    S = MatMul(Q·a, K·b)            (optional scalar Mul/Div on either operand; K possibly
                                      transposed by the product's flag)
    S' = (c·S + B1)·d + B2 ...      (scalar Mul/Div and up to two additive biases, any order,
                                      with reshapes of the batch dims between: Swin's shifted
                                      windows add their mask over (N, windows, heads, n, n));
                                      S itself may pass through one fused pointwise chain first
                                      (Swin V2: S · logit_scale[head] + position bias)
    P = Softmax(S', last axis)
    O = MatMul(P, V)

Matching (``find_attention``) is kept apart from the rewrite (``lower_attention``): the match
only reads the network, so every condition is decided before any layer of the block is lowered.
Every intermediate tensor must be read by the next layer of the block alone, be no output, be
fp16, and every layer must compute in FP16 in this segment; Q, K and V must be fp16 tensors the
segment produces or stages (no constants). The fused kernel (``kernels.attention_src``) reads
Q, K and V through their strided views, so the head split of a fused QKV projection costs no copy.
The scalars fold into one scale of Q·Kᵀ and one per bias. The kernel's batch dims are the common
refinement of the batch shapes along the chain ((N·W, H) and (N, W, H) give (N, W, H)), over
which every operand's strides are expanded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from backends.gpu.kernels import attention_src as att
from backends.gpu.kernels import gen
from backends.gpu.lowering.attention_rows import row_mapped
from backends.gpu.lowering.movement import input_view
from backends.gpu.lowering.pointwise import map_body
from backends.gpu.lowering.slots import Op, prec
from backends.gpu.lowering.views import View
from engine.ir.dtypes import Precision
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.network import Layer

if TYPE_CHECKING:
    from backends.gpu.lowering.lowerer import Lowerer


@dataclass(frozen=True)
class Operand:
    """A tensor the fused kernel reads; ``swap``: its last two dims are the kernel's in reverse."""

    tensor: str
    swap: bool = False


@dataclass(frozen=True)
class AttentionMatch:
    """One attention block: the kernel's operands and geometry (its two scales included), and the
    layers it replaces (``absorbed``, lowered by nothing else) ending in ``last``, the second product."""

    q: Operand
    k: Operand
    v: Operand
    biases: tuple[tuple[str, float, tuple[int, ...]], ...]  # (tensor, scale, the batch dims it is added over)
    geom: att.AttentionGeometry  # geom.batch: the refinement of every batch shape below
    absorbed: tuple[str, ...]
    last: str
    qk_batch: tuple[int, ...]  # the batch dims of Q·Kᵀ
    p_batch: tuple[int, ...]  # the batch dims of the softmax (and of O)
    out: str = ""  # the tensor the kernel writes: O, or the output of the transpose that reads O
    out_view: View | None = None  # O's place in ``out`` (None: ``out`` is O, row-major)
    score_map: str = ""  # the pointwise or element-wise layer that maps Q·Kᵀ first ("": none)
    pre: float = 1.0  # the scale of Q·Kᵀ as the map reads it (geom.scale then applies after the map)
    q_map: att.RowMap | None = None  # Q's rows as the product reads them: this map of q's rows
    k_map: att.RowMap | None = None


class _Walk:
    """The checks every layer and intermediate tensor of a candidate block must pass."""

    def __init__(self, lw: Lowerer) -> None:
        self.lw = lw
        self.producers = lw.net.producers()
        self.segment = {la.name for la in lw.layers}

    def fp16_layer(self, la: Layer | None) -> bool:
        return la is not None and la.name in self.segment and prec(la) is Precision.FP16  # never INT8

    def private(self, tensor: str, reader: Layer) -> bool:
        """Read by ``reader`` alone, not an output, fp16: the block may keep it in registers."""
        return self.lw.sole_reader(tensor) is reader and self.lw.dtypes.get(tensor) == "float16"

    def scalar(self, tensor: str) -> float | None:
        la = self.producers.get(tensor)
        if la is None or la.kind is not LayerKind.CONSTANT:
            return None
        value = np.asarray(la.weights["value"])
        return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype.kind == "f" else None

    def scaled(self, tensor: str, reader: Layer) -> tuple[str, float, list[str]]:
        """(x, c, layers) where ``tensor`` = c·x through private scalar multiplies and divides."""
        c, layers = 1.0, []
        while True:
            la = self.producers.get(tensor)
            if (not self.fp16_layer(la) or la.kind is not LayerKind.ELEMENTWISE
                    or la.params.op not in (ElementWiseOp.PROD, ElementWiseOp.DIV) or not self.private(tensor, reader)):
                return tensor, c, layers
            a, b = la.inputs
            sb, sa = self.scalar(b), self.scalar(a) if la.params.op is ElementWiseOp.PROD else None
            shape = self.lw.net.tensors[tensor].shape
            if sb is not None and sb != 0 and self.lw.net.tensors[a].shape == shape:
                x, f = a, (sb if la.params.op is ElementWiseOp.PROD else 1.0 / sb)
            elif sa is not None and self.lw.net.tensors[b].shape == shape:
                x, f = b, sa
            else:
                return tensor, c, layers
            c, tensor, reader = c * f, x, la
            layers.append(la.name)

    def last_two_swapped(self, tensor: str, reader: Layer) -> Layer | None:
        """The private FP16 shuffle that makes ``tensor`` by only exchanging its input's last two dims."""
        la = self.producers.get(tensor)
        if (la is None or la.kind is not LayerKind.SHUFFLE or not self.fp16_layer(la)
                or not self.private(tensor, reader)):
            return None
        p, rank = la.params, len(self.lw.net.tensors[la.inputs[0]].shape)
        swap = (*range(rank - 2), rank - 1, rank - 2)
        ok = (rank >= 2 and p.reshape is None and p.first_perm is not None and tuple(p.first_perm) == swap
              and (p.second_perm is None or tuple(p.second_perm) == tuple(range(rank))))
        return la if ok else None

    def operand_source(self, tensor: str, swap: bool, reader: Layer) -> tuple[Operand, float, list[str], Layer]:
        """What a product's operand reads through private scalar multiplies and divides and transposes
        of the last two dims, in any order (MaxViT scales K and then transposes it): (the operand,
        its scale c, the layers passed, the reader of the operand's tensor among them)."""
        c, layers = 1.0, []
        while True:
            shuffle = self.last_two_swapped(tensor, reader)
            if shuffle is not None:
                tensor, swap, reader = shuffle.inputs[0], not swap, shuffle
                layers.append(shuffle.name)
                continue
            x, f, scaled = self.scaled(tensor, reader)
            if not scaled:
                return Operand(tensor, swap), c, layers, reader
            tensor, c, reader = x, c * f, self.lw.net.layer(scaled[-1])
            layers += scaled

    def plain(self, tensor: str) -> bool:
        """An fp16 tensor with a slot of its own: staged, or made by a layer that is no constant."""
        la = self.producers.get(tensor)
        return self.lw.dtypes.get(tensor) == "float16" and (la is None or la.kind is not LayerKind.CONSTANT)


MAX_BIASES = 2


@dataclass
class _Scores:
    """What lies between the first product and the softmax: its layers and the folded scalars."""

    absorbed: list[str]
    post: float = 1.0  # the scale of every term from here to the softmax
    biases: tuple[tuple[str, float, tuple[int, ...]], ...] = ()
    score_map: str = ""  # a pointwise or element-wise layer reading the product directly (``_score_map``)


def _batch_reshape(la: Layer, shape: tuple[int, ...], net) -> bool:
    """A shuffle that only reshapes the batch dims, the last two (Sq, Sk) kept."""
    p = la.params
    ident = lambda perm: perm is None or tuple(perm) == tuple(range(len(perm)))  # noqa: E731
    src = net.tensors[la.inputs[0]].shape
    return (la.kind is LayerKind.SHUFFLE and p.reshape is not None and ident(p.first_perm)
            and ident(p.second_perm) and len(src) >= 2 and src[-2:] == shape[-2:])


def _back_to_product(w: _Walk, tensor: str, reader: Layer, acc: _Scores, shape: tuple[int, ...]
                     ) -> tuple[Layer, _Scores] | None:
    """From the softmax's input back through scalar multiplies, bias adds and reshapes of the
    batch dims to the product Q·Kᵀ (trying both inputs of an add as the scores)."""
    if not w.private(tensor, reader):
        return None
    la = w.producers.get(tensor)
    if not w.fp16_layer(la):
        return None
    net = w.lw.net
    if la.kind is LayerKind.MATRIX_MULTIPLY:
        return la, acc
    if la.kind is LayerKind.POINTWISE:
        return _as_score_map(w, la, acc, shape)
    if la.kind is LayerKind.SHUFFLE and _batch_reshape(la, shape, net):
        return _back_to_product(w, la.inputs[0], la, _Scores(acc.absorbed + [la.name], acc.post, acc.biases),
                                net.tensors[la.inputs[0]].shape)
    if la.kind is not LayerKind.ELEMENTWISE:
        return None
    x, c, layers = w.scaled(tensor, reader)
    if layers:
        return _back_to_product(w, x, net.layer(layers[-1]),
                                _Scores(acc.absorbed + layers, acc.post * c, acc.biases), shape)
    if la.params.op is not ElementWiseOp.SUM or len(acc.biases) >= MAX_BIASES or la.inputs[0] == la.inputs[1]:
        return _as_score_map(w, la, acc, shape)  # e.g. S · logit_scale[head] left unfused by the optimizer
    for scores, bias in (la.inputs, la.inputs[::-1]):
        bshape = net.tensors[bias].shape
        if (net.tensors[scores].shape != shape or w.lw.dtypes.get(bias) not in ("float16", "float32")
                or len(bshape) > len(shape)):
            continue
        term = (bias, acc.post, tuple(shape[:-2]))
        found = _back_to_product(w, scores, la, _Scores(acc.absorbed + [la.name], acc.post, (*acc.biases, term)),
                                 shape)
        if found is not None:
            return found
    return None


def _as_score_map(w: _Walk, la: Layer, acc: _Scores, shape: tuple[int, ...]) -> tuple[Layer, _Scores] | None:
    product = _score_map(w, la, shape)
    return None if product is None else (product, replace(acc, absorbed=acc.absorbed + [la.name], score_map=la.name))


def _score_map(w: _Walk, la: Layer, shape: tuple[int, ...]) -> Layer | None:
    """The product a pointwise or element-wise layer maps, where the kernel can apply the map per
    score: its first input is the product's private output, and its other inputs (fp16 or fp32)
    broadcast to the scores (a pointwise layer's weights always do: the optimizer fused them as such)."""
    product = w.producers.get(la.inputs[0])
    if (map_body(la) is None or not w.fp16_layer(product) or product.kind is not LayerKind.MATRIX_MULTIPLY
            or not w.private(la.inputs[0], la) or w.lw.net.tensors[la.inputs[0]].shape != shape):
        return None
    for t in la.inputs[1:]:
        if (t == la.inputs[0] or w.lw.dtypes.get(t) not in ("float16", "float32")
                or len(w.lw.net.tensors[t].shape) > len(shape)):
            return None
    if any(np.ndim(value) > len(shape) for value in la.weights.values()):
        return None
    return product


def refine(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The coarsest dims every shape is a grouping of (their cumulative products merged), or None
    where two shapes cut the total at points no common dims respect."""
    total = math.prod(shapes[0]) if shapes else 1
    cuts = set()
    for shape in shapes:
        if math.prod(shape) != total:
            return None
        acc = 1
        for d in shape:
            acc *= d
            cuts.add(acc)
    dims, prev = [], 1
    for cut in sorted(cuts):
        if cut % prev:
            return None
        if cut != prev:
            dims.append(cut // prev)
        prev = cut
    return tuple(dims) if total > 0 else None


def expand(strides: tuple[int, ...], shape: tuple[int, ...], fine: tuple[int, ...]) -> tuple[int, ...]:
    """Strides over ``fine`` of an operand with ``strides`` over ``shape`` (a grouping of ``fine``)."""
    out: list[int] = []
    i = 0
    for d, st in zip(shape, strides):
        group: list[int] = []
        while math.prod(group) < d:
            group.append(fine[i])
            i += 1
        inner = st
        sub = []
        for f in reversed(group):
            sub.append(inner if d > 1 else 0)
            inner *= f
        out += reversed(sub)
    while i < len(fine):  # trailing size-1 dims
        out.append(0)
        i += 1
    return tuple(out)


def _match_from_softmax(w: _Walk, sm: Layer) -> AttentionMatch | None:
    lw = w.lw
    shape = lw.net.tensors[sm.inputs[0]].shape
    rank = len(shape)
    if not w.fp16_layer(sm) or sm.params.log or rank < 2 or sm.params.axis % rank != rank - 1:
        return None
    pv = lw.sole_reader(sm.outputs[0])
    if (not w.fp16_layer(pv) or pv.kind is not LayerKind.MATRIX_MULTIPLY or pv.inputs[0] != sm.outputs[0]
            or pv.inputs[1] == sm.outputs[0] or pv.params.transpose_a or not w.private(sm.outputs[0], pv)):
        return None
    found = _back_to_product(w, sm.inputs[0], sm, _Scores([sm.name]), shape)
    if found is None:
        return None
    qk, acc = found
    qk_batch, p_batch = tuple(lw.net.tensors[qk.outputs[0]].shape[:-2]), tuple(shape[:-2])
    if tuple(lw.net.tensors[pv.outputs[0]].shape[:-2]) != p_batch:
        return None  # V broadcasts the batch wider than the probabilities
    batch = refine([qk_batch, p_batch, *(ctx for _, _, ctx in acc.biases)])
    if batch is None:
        return None
    q, qs, q_layers, q_reader = w.operand_source(qk.inputs[0], qk.params.transpose_a, qk)
    k, ks, k_layers, k_reader = w.operand_source(qk.inputs[1], not qk.params.transpose_b, qk)
    if qk.inputs[0] == qk.inputs[1] or not (w.plain(q.tensor) and w.plain(k.tensor) and w.plain(pv.inputs[1])):
        return None
    ops = [q, k, Operand(pv.inputs[1], pv.params.transpose_b)]
    row_maps: list[att.RowMap | None] = [None, None]
    for i, layers, reader in ((0, q_layers, q_reader), (1, k_layers, k_reader)):
        mapped = row_mapped(w, ops[i], reader)
        if mapped is not None:
            ops[i], row_maps[i] = Operand(mapped.source), mapped.row_map
            layers.extend(mapped.layers)
    pre, post = (qs * ks, acc.post) if acc.score_map else (1.0, acc.post * qs * ks)
    geom = _geometry(lw, *ops, pv, batch, post)
    if geom is None:
        return None
    absorbed = acc.absorbed + [qk.name] + q_layers + k_layers
    out, out_view = pv.outputs[0], None
    through = _writes_through(w, pv)
    if through is not None:
        shuffle, out_view = through
        out = shuffle.outputs[0]
        absorbed.append(shuffle.name)
    return AttentionMatch(*ops, acc.biases, geom, tuple(absorbed), pv.name, qk_batch, p_batch, out, out_view,
                          acc.score_map, pre, *row_maps)


def _inverse(perm: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    inv = [0] * rank
    for i, p in enumerate(perm if perm is not None else range(rank)):
        inv[p] = i
    return tuple(inv)


def _writes_through(w: _Walk, pv: Layer) -> tuple[Layer, View] | None:
    """(shuffle, O's view in its output) when O's only reader is a shuffle of it that moves every
    element to a place one set of strides gives: the kernel then writes the shuffle's output directly."""
    lw = w.lw
    o = pv.outputs[0]
    sh = lw.sole_reader(o)
    if sh is None or sh.kind is not LayerKind.SHUFFLE or sh.name not in w.segment or not w.private(o, sh):
        return None
    t = sh.outputs[0]
    if lw.dtypes.get(t) != "float16":
        return None
    p = sh.params
    oshape, tshape = lw.net.tensors[o].shape, lw.net.tensors[t].shape
    first = tuple(oshape[i] for i in p.first_perm) if p.first_perm is not None else oshape
    view = View(t, tshape, gen.row_major(tshape)).permute(_inverse(p.second_perm, len(tshape)))
    if p.reshape is not None:
        view = view.reshape(first)
    if view is None:
        return None
    view = view.permute(_inverse(p.first_perm, len(oshape)))
    return (sh, view) if view.affine and view.shape == oshape else None


def find_attention(lw: Lowerer) -> dict[str, AttentionMatch]:
    """The attention blocks of the segment, by the name of their second product."""
    w = _Walk(lw)
    found: dict[str, AttentionMatch] = {}
    taken: set[str] = set()
    for la in lw.layers:
        if la.kind is LayerKind.SOFTMAX:
            m = _match_from_softmax(w, la)
            if m is not None and not taken & set(m.absorbed):
                found[m.last] = m
                taken.update(m.absorbed)
    return found


def _oriented(shape: tuple[int, ...], strides: tuple[int, ...], swap: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not swap:
        return shape, strides
    return (*shape[:-2], shape[-1], shape[-2]), (*strides[:-2], strides[-1], strides[-2])


def _geometry(lw: Lowerer, q: Operand, k: Operand, v: Operand, pv: Layer, batch: tuple[int, ...], scale: float
              ) -> att.AttentionGeometry | None:
    """The kernel's geometry from the tensors' shapes, or None where the shapes do not fit it."""
    shapes = [_oriented(lw.net.tensors[o.tensor].shape, (0,) * len(lw.net.tensors[o.tensor].shape), o.swap)[0]
              for o in (q, k, v)]
    out = lw.net.tensors[pv.outputs[0]].shape
    if any(len(s) < 2 for s in shapes) or len(out) < 2:
        return None
    (sq, d), (sk, dk), (sv, dv) = (s[-2:] for s in shapes)
    if d != dk or sk != sv or out[-2:] != (sq, dv):
        return None
    geom = att.AttentionGeometry(batch, sq, sk, d, dv, scale)
    return geom if att.supported(geom) is None else None


def _operand(view: View, swap: bool, batch: tuple[int, ...], fine: tuple[int, ...]) -> att.AttentionOperand:
    """The kernel's addressing of a view whose batch dims broadcast to ``batch`` (a grouping of ``fine``)."""
    shape, strides = _oriented(view.shape, view.strides, swap)
    bs = gen.broadcast_strides(shape[:-2], strides[:-2], batch)
    return att.AttentionOperand(expand(tuple(bs), batch, fine), strides[-2], strides[-1], view.base)


def _score_operand(view: View, batch: tuple[int, ...], geom: att.AttentionGeometry) -> att.AttentionOperand:
    """The kernel's addressing of a term of the scores (a bias, a score map's operand): ``view``
    broadcast over (*batch, Sq, Sk), ``batch`` a grouping of the kernel's batch dims."""
    st = gen.broadcast_strides(view.shape, view.strides, (*batch, geom.sq, geom.sk))
    return att.AttentionOperand(expand(tuple(st[:-2]), batch, geom.batch), st[-2], st[-1], view.base)


def _lower_score_map(lw: Lowerer, m: AttentionMatch) -> tuple[att.ScoreMap, list[str]]:
    """The kernel's form of the pointwise or element-wise layer that maps Q·Kᵀ (its weights uploaded as an FP16
    layer's, rounded to fp16), and the slots it reads."""
    la = lw.net.layer(m.score_map)
    operands, body = map_body(la)
    fp16 = prec(la) is Precision.FP16
    mapped, reads = [], []
    for key, value in operands[1:]:
        view = input_view(lw, lw.float_of(key)) if value is None else View.of(lw.const(f"{la.name}/{key}", value, fp16))
        mapped.append((_score_operand(view, m.qk_batch, m.geom), lw.slots[view.root].dtype))
        reads.append(view.root)
    return att.ScoreMap(body, tuple(mapped), m.pre), reads


def lower_attention(lw: Lowerer, m: AttentionMatch) -> None:
    """One launch of the fused kernel for the block ``m`` (its other layers are not lowered)."""
    geom = m.geom
    views = {o.tensor: input_view(lw, lw.float_of(o.tensor)) for o in (m.q, m.k, m.v)}
    ops = [_operand(views[o.tensor], o.swap, batch, geom.batch)
           for o, batch in ((m.q, m.qk_batch), (m.k, m.qk_batch), (m.v, m.p_batch))]
    reads = [views[o.tensor].root for o in (m.q, m.k, m.v)]
    biases = []
    for tensor, scale, ctx in m.biases:
        bv = input_view(lw, lw.float_of(tensor))
        biases.append(att.AttentionBias(_score_operand(bv, ctx, geom), lw.slots[bv.root].dtype, scale))
        reads.append(bv.root)
    score_map = None
    if m.score_map:
        score_map, map_reads = _lower_score_map(lw, m)
        reads += map_reads
    out = lw.new_slot(m.out, "linear", "float16")
    if m.out_view is not None:
        out_op = _operand(m.out_view, False, m.p_batch, geom.batch)
    else:
        st = gen.row_major((*m.p_batch, geom.sq, geom.dv))
        out_op = att.AttentionOperand(expand(tuple(st[:-2]), m.p_batch, geom.batch), st[-2], st[-1])
    span = max([out.elements] + [lw.slots[r].elements for r in reads])
    kname = lw.kernel_name(m.last)
    lw.src.append(att.attention_kernel(kname, geom, *ops, biases, span, out_op, score_map, m.q_map, m.k_map))
    order = {la.name: i for i, la in enumerate(lw.layers)}
    label = " + ".join(sorted([*m.absorbed, m.last], key=order.__getitem__))
    lw.ops.append(Op(label, "gen", list(dict.fromkeys(reads)), [out.name], [out.name, *reads], geom.grid, kname,
                     block=att.THREADS, smem=att.shared_bytes(geom)))

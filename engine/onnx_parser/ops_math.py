"""Matrix products, softmax, reductions and normalisations."""

from __future__ import annotations

import math

import numpy as np

from engine.ir.layers import (
    ElementWiseOp,
    ElementWiseParams,
    FullyConnectedParams,
    IdentityParams,
    MatrixMultiplyParams,
    NormalizationParams,
    ReduceOp,
    ReduceParams,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
    SoftMaxParams,
)
from engine.onnx_parser.context import NodeContext, Ref, contiguous
from engine.onnx_parser.registry import converter


@converter("MatMul")
def matmul(nc):
    """A constant 2-D right operand makes a FullyConnected layer (weights); otherwise MatrixMultiply."""
    a, b = nc.input(0), nc.input(1)
    if nc.np_dtype(a) != nc.np_dtype(b):
        raise nc.error(f"inputs have different element types {nc.np_dtype(a)} and {nc.np_dtype(b)}")
    if b.is_const and not a.is_const and b.const.ndim == 2 and nc.rank(a) >= 1:
        kernel = contiguous(b.const.T)
        if nc.shape(a)[-1] != kernel.shape[1]:
            raise nc.error(f"shapes {nc.shape(a)} and {b.const.shape} cannot be multiplied")
        return [nc.add1(FullyConnectedParams(num_outputs=int(kernel.shape[0])), [a], {"kernel": kernel})]
    return [nc.add1(MatrixMultiplyParams(), [a, b])]


def _uniform_scale(nc: NodeContext, x: Ref, factor: float, final: bool) -> Ref:
    scale = np.array([factor], nc.np_dtype(x))
    return nc.add1(ScaleParams(ScaleMode.UNIFORM, channel_axis=0), [x], {"scale": scale}, final=final)


@converter("Gemm")
def gemm(nc):
    """Y = alpha·A'·B' + beta·C. Constant B → FullyConnected with alpha and a vector C folded in."""
    a = nc.input(0)
    alpha, beta = float(nc.attr("alpha", 1.0)), float(nc.attr("beta", 1.0))
    trans_a, trans_b = bool(nc.attr("transA", 0)), bool(nc.attr("transB", 0))
    if nc.rank(a) != 2:
        raise nc.error(f"A must be 2-D, got shape {nc.shape(a)}")
    dtype = nc.np_dtype(a)
    c = nc.input(2) if nc.has_input(2) else None
    b = nc.input(1)
    if b.is_const and not a.is_const:
        bmat = b.const.astype(np.float64)
        if bmat.ndim != 2:
            raise nc.error(f"B must be 2-D, got shape {bmat.shape}")
        kernel = (alpha * (bmat if trans_b else bmat.T)).astype(dtype)  # (N, K)
        n = kernel.shape[0]
        x = a
        if trans_a:
            x = nc.add1(ShuffleParams(first_perm=(1, 0)), [a], final=False)
        weights = {"kernel": kernel}
        bias_done = c is None or beta == 0.0
        if c is not None and c.is_const and beta != 0.0 and c.const.size in (1, n) and \
                (c.const.ndim < 2 or c.const.shape[0] == 1):
            weights["bias"] = np.broadcast_to(beta * c.const.astype(np.float64).reshape(-1), (n,)).astype(dtype)
            bias_done = True
        y = nc.add1(FullyConnectedParams(num_outputs=int(n)), [x], weights, final=bias_done)
    else:
        y = nc.add1(MatrixMultiplyParams(transpose_a=trans_a, transpose_b=trans_b), [a, b],
                    final=alpha == 1.0 and (c is None or beta == 0.0))
        if alpha != 1.0:
            y = _uniform_scale(nc, y, alpha, final=c is None or beta == 0.0)
        bias_done = c is None or beta == 0.0
    if not bias_done:
        if c.is_const:
            cc = Ref(const=(beta * c.const.astype(np.float64)).astype(dtype))
        elif beta != 1.0:
            cc = _uniform_scale(nc, c, beta, final=False)
        else:
            cc = c
        y = nc.add1(ElementWiseParams(ElementWiseOp.SUM), [y, cc])
    return [y]


def _softmax(nc: NodeContext, log: bool) -> list[Ref]:
    """Opset ≥ 13: one axis. Before 13: the input is flattened to 2-D at ``axis`` first."""
    x = nc.input(0)
    shape = nc.shape(x)
    rank = len(shape)
    if nc.opset >= 13:
        axis = int(nc.attr("axis", -1))
        if not -rank <= axis < max(rank, 1):
            raise nc.error(f"axis {axis} is out of range for rank {rank}")
        return [nc.add1(SoftMaxParams(axis=axis % max(rank, 1), log=log), [x])]
    axis = int(nc.attr("axis", 1))
    if not -rank <= axis <= rank:
        raise nc.error(f"axis {axis} is out of range for rank {rank}")
    if axis < 0:
        axis += rank
    if axis == rank - 1:
        return [nc.add1(SoftMaxParams(axis=rank - 1, log=log), [x])]
    flat = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    v = nc.add1(ShuffleParams(reshape=flat), [x], final=False)
    v = nc.add1(SoftMaxParams(axis=1, log=log), [v], final=False)
    return [nc.add1(ShuffleParams(reshape=shape), [v])]


@converter("Softmax")
def softmax(nc):
    return _softmax(nc, log=False)


@converter("LogSoftmax")
def log_softmax(nc):
    return _softmax(nc, log=True)


_REDUCE = {
    "ReduceMean": ReduceOp.MEAN, "ReduceMax": ReduceOp.MAX, "ReduceMin": ReduceOp.MIN, "ReduceSum": ReduceOp.SUM,
    "ReduceProd": ReduceOp.PROD, "ReduceL1": ReduceOp.L1, "ReduceL2": ReduceOp.L2,
    "ReduceSumSquare": ReduceOp.SUM_SQUARE, "ReduceLogSum": ReduceOp.LOG_SUM,
    "ReduceLogSumExp": ReduceOp.LOG_SUM_EXP,
}


@converter(*_REDUCE)
def reduce(nc):
    """Axes are an attribute before opset 18 (ReduceSum: 13) and an optional constant input after."""
    x = nc.input(0)
    rank = nc.rank(x)
    keep = bool(nc.attr("keepdims", 1))
    axes_from_input = nc.opset >= (13 if nc.op == "ReduceSum" else 18)
    if axes_from_input:
        axes = nc.const(1, "axes") if nc.has_input(1) else None
        axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
        noop = bool(nc.attr("noop_with_empty_axes", 0))
    else:
        axes = nc.ints("axes")
        axes = None if axes is None else list(axes)
        noop = False
    if not axes:
        if noop:
            return [nc.add1(IdentityParams(), [x])]
        axes = list(range(rank))
    for a in axes:
        if not -rank <= a < max(rank, 1):
            raise nc.error(f"axis {a} is out of range for rank {rank}")
    axes = tuple(sorted({a % rank for a in axes})) if rank else ()
    if not axes:
        return [nc.add1(IdentityParams(), [x])]
    return [nc.add1(ReduceParams(_REDUCE[nc.op], axes, keep), [x])]


@converter("ArgMax", "ArgMin")
def arg_extreme(nc):
    """The first index of the largest / smallest element along ``axis`` (int64)."""
    x = nc.input(0)
    rank = nc.rank(x)
    axis = int(nc.attr("axis", 0))
    if not -rank <= axis < rank:  # a scalar has no axis to search
        raise nc.error(f"axis {axis} is out of range for rank {rank}")
    if int(nc.attr("select_last_index", 0)):
        raise nc.unsupported("select_last_index=1 (the last of tied extremes) is not supported")
    if nc.np_dtype(x).kind != "f":
        raise nc.unsupported(f"{nc.op} of {nc.np_dtype(x)} tensors is not supported (float inputs only)")
    op = ReduceOp.ARGMAX if nc.op == "ArgMax" else ReduceOp.ARGMIN
    return [nc.add1(ReduceParams(op, (axis % rank,), bool(nc.attr("keepdims", 1))), [x])]


@converter("BatchNormalization")
def batch_norm(nc):
    """Inference BN → a per-channel Scale: scale = γ/√(var+ε), shift = β − mean·scale."""
    if int(nc.attr("training_mode", 0)):
        raise nc.unsupported("training_mode=1 (batch statistics) is not supported; hetrt runs inference only")
    if any(nc.output_used(i) for i in range(1, 5)):
        raise nc.unsupported("the running mean/variance outputs (training) are not supported")
    x = nc.input(0)
    xs = nc.shape(x)
    if len(xs) < 2:
        raise nc.error(f"input must be (N, C, ...), got shape {xs}")
    c = xs[1]
    eps = float(nc.attr("epsilon", 1e-5))
    parts = []
    for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "var")):
        v = nc.const(i, what).astype(np.float64)
        if v.size != c:
            raise nc.error(f"{what} has {v.size} values, expected {c} (channels)")
        parts.append(v.reshape(c))
    gamma, beta_, mean, var = parts
    scale = gamma / np.sqrt(var + eps)
    shift = beta_ - mean * scale
    dtype = nc.np_dtype(x)
    weights = {"scale": scale.astype(dtype), "shift": shift.astype(dtype)}
    return [nc.add1(ScaleParams(ScaleMode.CHANNEL, channel_axis=1), [x], weights)] + [None] * 4


@converter("LayerNormalization")
def layer_norm(nc):
    if nc.output_used(1) or nc.output_used(2):
        raise nc.unsupported("the Mean/InvStdDev outputs are not supported")
    x = nc.input(0)
    rank = nc.rank(x)
    axis = int(nc.attr("axis", -1))
    if not -rank <= axis < rank:
        raise nc.error(f"axis {axis} is out of range for rank {rank}")
    axis %= rank
    dtype = nc.np_dtype(x)
    weights = {"scale": nc.const(1, "scale").astype(dtype)}
    if nc.has_input(2):
        weights["bias"] = nc.const(2, "bias").astype(dtype)
    params = NormalizationParams(axes=tuple(range(axis, rank)), epsilon=float(nc.attr("epsilon", 1e-5)))
    return [nc.add1(params, [x], weights), None, None]


@converter("InstanceNormalization")
def instance_norm(nc):
    x = nc.input(0)
    xs = nc.shape(x)
    if len(xs) < 3:
        raise nc.error(f"input must be (N, C, spatial...), got shape {xs}")
    c = xs[1]
    dtype = nc.np_dtype(x)
    bshape = (c,) + (1,) * (len(xs) - 2)
    weights = {}
    for i, what in ((1, "scale"), (2, "bias")):
        v = nc.const(i, what)
        if v.size != c:
            raise nc.error(f"{what} has {v.size} values, expected {c} (channels)")
        weights[what] = v.reshape(bshape).astype(dtype)
    params = NormalizationParams(axes=tuple(range(2, len(xs))), epsilon=float(nc.attr("epsilon", 1e-5)))
    return [nc.add1(params, [x], weights)]

"""Volumetric (3-D) layers as the 2-D layers every backend runs.

A 3-D convolution over (N, C, T, H, W) is a sum over its temporal taps of 2-D convolutions, each
over the frames that tap reads, with the frames folded into the batch:

    y[n, :, t] = b + sum_i conv2d(x_pad[n, :, t*s_t + i*d_t], W[:, :, i])

so it becomes, per tap, a slice of the (temporally padded) input, a shuffle to (N*T', C, H, W) and
a 2-D convolution with that tap's kernel (the bias on the first tap only), the taps summed by
element-wise adds that the convolution + residual fusion then folds into the convolutions, and
one shuffle back to (N, K, T', H', W'). The GPU's tensor-core convolution then runs video networks
(R3D, R(2+1)D, S3D-style) whose 3-D layers it has no kernel for, and a DLA can take the 2-D parts.
A global average / max pool over a rank-5 tensor is a mean / max reduction over its three spatial
axes; any other 3-D max / average pool is a 2-D pool over (H, W) and one over T (``_pool3d``).
Each rewrite keeps the original layer's pins and output tensor.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import (
    ConvolutionParams,
    ElementWiseOp,
    ElementWiseParams,
    LayerKind,
    PaddingParams,
    PoolingParams,
    PoolingType,
    ReduceOp,
    ReduceParams,
    ShuffleParams,
    SliceParams,
)
from engine.ir.network import Layer, Network
from engine.optimizer.rewrite import Rewrite

NAME = "VolumetricAs2d"


def _pinned(net: Network, like: Layer, params, inputs: list[str], weights: dict | None, suffix: str) -> str:
    """Append a layer with ``like``'s pins and origin; its output tensor."""
    layer = net.add_layer(params, inputs, weights, name=net.unique_name(f"{like.name}/{suffix}"),
                          origin=like.origin)
    layer.precision, layer.device = like.precision, like.device
    return layer.outputs[0]


def _replace(net: Network, old: Layer, params, inputs: list[str], weights: dict | None = None) -> Layer:
    """A layer standing where ``old`` stood, writing ``old``'s output tensor."""
    new = Layer(old.name, params, inputs, list(old.outputs), dict(weights or {}), old.precision, old.device,
                list(old.origin))
    net.replace_layer(old, new)
    net.sort()
    return new


def _conv3d(net: Network, layer: Layer) -> None:
    p: ConvolutionParams = layer.params  # type: ignore[assignment]
    x = layer.inputs[0]
    n, c, t, h, w = net.tensors[x].shape
    _, k, t_out, h_out, w_out = net.tensors[layer.outputs[0]].shape
    (kt, kh, kw), (st, sh, sw) = p.kernel, p.stride
    (pt, ph, pw), (qt, qh, qw), (dt, dh, dw) = p.pre_padding, p.post_padding, p.dilation
    if pt or qt:
        x = _pinned(net, layer, PaddingParams((0, 0, pt, 0, 0), (0, 0, qt, 0, 0)), [x], None, "pad_t")
        t += pt + qt
    kernel = layer.weights["kernel"]
    total = None
    for i in range(kt):
        frames = x
        if (i * dt, st, t_out) != (0, 1, t):
            frames = _pinned(net, layer, SliceParams((0, 0, i * dt, 0, 0), (n, c, t_out, h, w), (1, 1, st, 1, 1)),
                             [x], None, f"tap{i}_frames")
        folded = _pinned(net, layer, ShuffleParams(first_perm=(0, 2, 1, 3, 4), reshape=(n * t_out, c, h, w)),
                         [frames], None, f"tap{i}_fold")
        weights = {"kernel": np.ascontiguousarray(kernel[:, :, i])}
        if i == 0 and "bias" in layer.weights:
            weights["bias"] = layer.weights["bias"]
        conv = ConvolutionParams(k, (kh, kw), (sh, sw), (ph, pw), (qh, qw), (dh, dw), p.groups)
        y = _pinned(net, layer, conv, [folded], weights, f"tap{i}")
        total = y if total is None else _pinned(net, layer, ElementWiseParams(ElementWiseOp.SUM), [y, total], None,
                                                f"tap{i}_sum")
    unfold = ShuffleParams(reshape=(n, t_out, k, h_out, w_out), second_perm=(0, 2, 1, 3, 4))
    _replace(net, layer, unfold, [total])


def _pool3d(net: Network, layer: Layer) -> None:
    """A 3-D max / average pool as a 2-D pool over (H, W) with C and T merged into the channels,
    then a 2-D pool of window (kt, 1) over (T, H'W'): both reshapes are free. The window, its
    padding and its count are products over the dims, so the two pools give the 3-D one (an
    average of averages over per-dim valid counts); a pool of one frame skips the second."""
    x = layer.inputs[0]
    n, c, t, h, w = net.tensors[x].shape
    _, _, t_out, h_out, w_out = net.tensors[layer.outputs[0]].shape
    p: PoolingParams = layer.params.resolved((t, h, w))  # type: ignore[union-attr]

    def pool(dims: tuple[int, int] | tuple[int], params: PoolingParams, inp: str, shape: tuple, suffix: str) -> str:
        pick = lambda v: tuple(v[d] for d in dims)  # noqa: E731
        p2 = params.replace(window=pick(p.window), stride=pick(p.stride), pre_padding=pick(p.pre_padding),
                            post_padding=pick(p.post_padding), dilation=pick(p.dilation))
        if len(dims) == 1:  # over T alone: a (kt, 1) window on (T, H'W')
            p2 = p2.replace(window=(*p2.window, 1), stride=(*p2.stride, 1), pre_padding=(*p2.pre_padding, 0),
                            post_padding=(*p2.post_padding, 0), dilation=(*p2.dilation, 1))
        folded = _pinned(net, layer, ShuffleParams(reshape=shape), [inp], None, f"{suffix}_in")
        return _pinned(net, layer, p2, [folded], None, suffix)

    one_frame = (p.window[0], p.stride[0], p.pre_padding[0], p.post_padding[0]) == (1, 1, 0, 0)
    y = pool((1, 2), p, x, (n, c * t, h, w), "pool_hw")
    if not one_frame:
        y = pool((0,), p, y, (n, c, t, h_out * w_out), "pool_t")
    _replace(net, layer, ShuffleParams(reshape=(n, c, t_out, h_out, w_out)), [y])


def _eligible_pool3d(net: Network, layer: Layer) -> bool:
    p = layer.params
    return (layer.kind is LayerKind.POOLING and not p.global_pool and len(net.tensors[layer.inputs[0]].shape) == 5
            and p.type in (PoolingType.AVERAGE, PoolingType.MAX))


def _eligible_conv3d(net: Network, layer: Layer) -> bool:
    p = layer.params
    return (layer.kind is LayerKind.CONVOLUTION and len(p.kernel) == 3 and not p.residual and p.activation is None
            and len(layer.inputs) == 1 and net.tensors[layer.inputs[0]].dtype.is_float)


def _eligible_global_pool(net: Network, layer: Layer) -> bool:
    p = layer.params
    return (layer.kind is LayerKind.POOLING and p.global_pool and len(net.tensors[layer.inputs[0]].shape) == 5
            and p.type in (PoolingType.AVERAGE, PoolingType.MAX))


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for layer in list(net.layers):
        if _eligible_conv3d(net, layer):
            _conv3d(net, layer)
            rewrites.append(Rewrite(NAME, "decompose", (layer.name,), layer.name,
                                    f"3-D convolution as {layer.params.kernel[0]} 2-D convolution(s) over frames"))
        elif _eligible_global_pool(net, layer):
            op = ReduceOp.MEAN if layer.params.type is PoolingType.AVERAGE else ReduceOp.MAX
            _replace(net, layer, ReduceParams(op, (2, 3, 4), True), list(layer.inputs))
            rewrites.append(Rewrite(NAME, "decompose", (layer.name,), layer.name,
                                    "rank-5 global pooling as a reduction over its three spatial axes"))
        elif _eligible_pool3d(net, layer):
            _pool3d(net, layer)
            rewrites.append(Rewrite(NAME, "decompose", (layer.name,), layer.name,
                                    "3-D pooling as 2-D pooling over (H, W), then over T"))
    return rewrites

"""Horizontal merge of 1x1 convolutions that read the same tensor (``Merging layers: a || b``).

Convolutions with 1x1 kernels, stride 1, no padding, one group and no residual that read the
same input with the same activation and pins compute independent output channels of one larger
1x1 convolution; concatenating their kernels (and biases; a missing bias is zeros) along the
output channels gives one GEMM, and a Split along the channel axis restores the original output
tensors under their original names, so readers are unchanged. Exact: each output channel is
the same dot product either way.

A convolution whose output feeds a Concatenation that is, or that concat elimination would make,
in-place is left out: writing into the concat's buffer saves a copy, which the Split would undo.
"""

from __future__ import annotations

import numpy as np

from engine.ir.layers import ConcatenationParams, ConvolutionParams, SplitParams
from engine.ir.network import Layer, Network
from engine.optimizer.graph import free_name, merged_origin
from engine.optimizer.passes import concat
from engine.optimizer.rewrite import Rewrite

NAME = "HorizontalMerge"


def _mergeable(layer: Layer) -> bool:
    p = layer.params
    if not isinstance(p, ConvolutionParams) or p.residual or p.groups != 1:
        return False
    ones = (1,) * len(p.kernel)
    return (p.kernel == ones and p.stride == ones and p.dilation == ones and not any(p.pre_padding)
            and not any(p.post_padding))


def _feeds_pending_concat(net: Network, layer: Layer, uses: dict[str, list[Layer]],
                          producers: dict[str, Layer]) -> bool:
    for reader in uses.get(layer.outputs[0], []):
        p = reader.params
        if isinstance(p, ConcatenationParams) and (p.in_place or concat.eligible(net, reader, uses, producers)):
            return True
    return False


def _groups(net: Network) -> list[list[Layer]]:
    uses, producers = net.consumers(), net.producers()
    groups: dict[tuple, list[Layer]] = {}
    for layer in net.layers:
        if not _mergeable(layer) or _feeds_pending_concat(net, layer, uses, producers):
            continue
        p = layer.params
        assert isinstance(p, ConvolutionParams)
        key = (layer.inputs[0], p.activation, layer.precision, layer.device, layer.weights["kernel"].dtype)
        groups.setdefault(key, []).append(layer)
    return [g for g in groups.values() if len(g) >= 2]


def _merge(net: Network, convs: list[Layer]) -> Layer:
    kernel = np.concatenate([c.weights["kernel"] for c in convs], axis=0)
    weights = {"kernel": kernel}
    if any("bias" in c.weights for c in convs):
        weights["bias"] = np.concatenate([
            c.weights.get("bias", np.zeros(c.weights["kernel"].shape[0], kernel.dtype)) for c in convs])
    first = convs[0]
    params = first.params.replace(num_output_maps=kernel.shape[0])
    name = free_name(net, " || ".join(c.name for c in convs), convs)
    out = net.unique_name(name)
    origin = merged_origin(*convs)
    merged = Layer(name, params, [first.inputs[0]], [out], weights, first.precision, first.device, origin)
    sizes = tuple(c.weights["kernel"].shape[0] for c in convs)
    split = Layer(free_name(net, f"{name} (split)", convs), SplitParams(axis=1, sizes=sizes), [out],
                  [c.outputs[0] for c in convs], {}, first.precision, first.device, origin)
    net.replace_layer(convs[0], merged)  # the first conv's slot: the shared input exists there
    net.replace_layer(convs[1:], split)
    net.sort()  # readers of the first conv's output may precede the split's slot
    return merged


def run(net: Network) -> list[Rewrite]:
    rewrites: list[Rewrite] = []
    for group in _groups(net):
        merged = _merge(net, group)
        rewrites.append(Rewrite(NAME, "merge", tuple(c.name for c in group), merged.name))
    return rewrites

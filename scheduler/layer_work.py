"""What a layer asks of a device: multiply-accumulates, elementwise operations and DRAM bytes.

Counted from the IR alone (shapes, parameters, weights), so every cost model sees the same work:

* MACs: convolution ``N*K*prod(out_spatial)*(C/groups)*prod(kernel)``; deconvolution
  ``N*C*prod(in_spatial)*(K/groups)*prod(kernel)``; fully connected ``rows*K*C``; matrix multiply
  ``batch*M*N*K``. Everything else has no MACs.
* Elementwise ops: pooling reads ``window`` inputs per output; every other layer one op per output
  element (plus one per element of each extra input).
* DRAM bytes (unfused, each layer reads its inputs and weights once and writes its outputs once, at
  the compute precision's element size: INT8 1, FP16 2, FP32 4 bytes). Cache reuse across layers is
  not modelled: on Jetson the activations of a CNN layer (MBs) exceed the GPU's 4 MB L2 [U].
* Kernels: one per layer (the optimizer has already fused conv+bias+activation+residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.ir.dtypes import Precision
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network

_SHAPE_ONLY = {LayerKind.SHUFFLE, LayerKind.IDENTITY, LayerKind.CONSTANT}


@dataclass(frozen=True)
class LayerWork:
    name: str
    kind: str
    macs: int
    elem_ops: int
    read_bytes: int
    write_bytes: int
    weight_bytes: int
    kernels: int
    gemm: tuple[int, int, int] | None = None  # implicit GEMM per group: (M rows, N columns, K depth)
    groups: int = 1

    @property
    def bytes(self) -> int:
        return self.read_bytes + self.write_bytes + self.weight_bytes


def element_size(precision: Precision | str | None) -> int:
    p = Precision(precision or Precision.FP32)
    return {Precision.INT8: 1, Precision.FP16: 2, Precision.FP32: 4}[p]


def _macs(layer: Layer, net: Network) -> int:
    kind = layer.kind
    p = layer.params
    ins = [net.tensors[t].shape for t in layer.inputs]
    outs = [net.tensors[t].shape for t in layer.outputs]
    if kind is LayerKind.CONVOLUTION:
        x, y = ins[0], outs[0]
        return y[0] * y[1] * math.prod(y[2:]) * (x[1] // p.groups) * math.prod(p.kernel)
    if kind is LayerKind.DECONVOLUTION:
        x, y = ins[0], outs[0]
        return x[0] * x[1] * math.prod(x[2:]) * (y[1] // p.groups) * math.prod(p.kernel)
    if kind is LayerKind.FULLY_CONNECTED:
        x = ins[0]
        return math.prod(x[:-1]) * p.num_outputs * x[-1]
    if kind is LayerKind.MATRIX_MULTIPLY:
        y = outs[0]
        a = ins[0]
        k = a[-2] if p.transpose_a and len(a) >= 2 else a[-1]
        return math.prod(y) * k
    if kind in (LayerKind.RNN, LayerKind.LSTM, LayerKind.GRU):  # every step multiplies by W and R
        return math.prod(ins[0][:2]) * (layer.weights["W"].size + layer.weights["R"].size)
    return 0


def _gemm(layer: Layer, net: Network) -> tuple[tuple[int, int, int] | None, int]:
    """The implicit GEMM of a convolution-like layer: rows = output pixels, columns = output
    channels per group, depth = reduction per output; and the number of groups."""
    kind, p = layer.kind, layer.params
    if kind is LayerKind.CONVOLUTION:
        x, y = net.tensors[layer.inputs[0]].shape, net.tensors[layer.outputs[0]].shape
        g = p.groups
        return (y[0] * math.prod(y[2:]), y[1] // g, x[1] // g * math.prod(p.kernel)), g
    if kind is LayerKind.DECONVOLUTION:
        x, y = net.tensors[layer.inputs[0]].shape, net.tensors[layer.outputs[0]].shape
        g = p.groups
        return (x[0] * math.prod(x[2:]), y[1] // g * math.prod(p.kernel), x[1] // g), g
    if kind is LayerKind.FULLY_CONNECTED:
        x = net.tensors[layer.inputs[0]].shape
        return (math.prod(x[:-1]), p.num_outputs, x[-1]), 1
    if kind is LayerKind.MATRIX_MULTIPLY:
        y = net.tensors[layer.outputs[0]].shape
        macs = _macs(layer, net)
        n = y[-1] if y else 1
        rows = math.prod(y[:-1]) if len(y) > 1 else 1
        return (rows, n, macs // max(rows * n, 1)), 1
    return None, 1


def layer_work(layer: Layer, net: Network, precision: Precision | str | None = None) -> LayerWork:
    """The work of ``layer`` computed at ``precision`` (default: the layer's own, else FP32)."""
    es = element_size(precision or layer.precision)
    out_elems = sum(math.prod(net.tensors[t].shape) for t in layer.outputs)
    in_elems = sum(math.prod(net.tensors[t].shape) for t in layer.inputs)
    w_elems = sum(int(w.size) for w in layer.weights.values())
    macs = _macs(layer, net)
    if layer.kind is LayerKind.POOLING:
        x = net.tensors[layer.inputs[0]].shape
        window = math.prod(layer.params.resolved(x[2:]).window)
        elem = out_elems * window
    elif macs:
        elem = 0
    else:
        elem = max(out_elems, in_elems)
    kernels = 0 if layer.kind in _SHAPE_ONLY else 1
    if layer.kind in _SHAPE_ONLY:  # a view: no arithmetic; a real copy at most
        elem = 0
    gemm, groups = _gemm(layer, net) if macs else (None, 1)
    return LayerWork(layer.name, layer.kind.value, macs, elem, in_elems * es, out_elems * es, w_elems * es,
                     kernels, gemm, groups)

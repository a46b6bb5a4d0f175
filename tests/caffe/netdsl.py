"""A small network description that writes one network three ways from the same seeded weights:
a Caffe deploy prototxt (text), a .caffemodel (binary, through hetrt's Caffe schema) and an
equivalent ONNX model (onnx.helper). The ONNX side is written independently of the Caffe parser,
so building both and comparing their outputs checks the parser's reading of every layer.

Shapes are tracked here with Caffe's own formulas (pooling rounds up), so the ONNX graph needs no
shape inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.caffe_parser import caffemodel_bytes


class Enum(str):
    """A bare identifier in the prototxt (an enum value such as MAX)."""


def _fmt(key: str, value, indent: str) -> list[str]:
    if isinstance(value, dict):
        inner = [line for k, v in value.items() for line in _fmt(k, v, indent + "  ")]
        return [f"{indent}{key} {{", *inner, f"{indent}}}"]
    if isinstance(value, (list, tuple)):
        return [line for v in value for line in _fmt(key, v, indent)]
    if isinstance(value, bool):
        return [f"{indent}{key}: {'true' if value else 'false'}"]
    if isinstance(value, Enum):
        return [f"{indent}{key}: {value}"]
    if isinstance(value, str):
        return [f'{indent}{key}: "{value}"']
    return [f"{indent}{key}: {value}"]


@dataclass
class Net:
    name: str
    input_shape: tuple[int, ...]
    seed: int = 0
    text: list[str] = field(default_factory=list)
    blobs: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    onnx_name: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.text.append(f'name: "{self.name}"')
        self._layer("data", "Input", [], ["data"],
                    {"input_param": {"shape": {"dim": list(self.input_shape)}}})
        self.shapes["data"] = tuple(self.input_shape)
        self.onnx_name["data"] = "data"
        self._versions: dict[str, int] = {}

    # ------------------------------------------------------------------ plumbing

    def _layer(self, name, type_, bottoms, tops, params=None, blobs=None) -> None:
        body = {"name": name, "type": type_}
        lines = ["layer {", *[ln for k, v in body.items() for ln in _fmt(k, v, "  ")]]
        lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
        for k, v in (params or {}).items():
            lines += _fmt(k, v, "  ")
        self.text.append("\n".join([*lines, "}"]))
        self.blobs[name] = (type_, list(blobs or []))  # a caffemodel lists every layer, with or without blobs

    def _in(self, blob: str) -> str:
        return self.onnx_name[blob]

    def _out(self, blob: str, shape: tuple[int, ...]) -> str:
        k = self._versions.get(blob, 0)
        self._versions[blob] = k + 1
        name = f"{blob}__{k}"
        self.onnx_name[blob] = name
        self.shapes[blob] = tuple(shape)
        return name

    def _const(self, base: str, value: np.ndarray) -> str:
        name = f"{base}__c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def _node(self, op, inputs, outputs, **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def _rand(self, shape, scale=None) -> np.ndarray:
        scale = math.sqrt(1.0 / max(1, math.prod(shape[1:]))) if scale is None else scale
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    # ------------------------------------------------------------------ layers

    def conv(self, name, bottom, num_output, kernel, stride=1, pad=0, group=1, bias=True, dilation=1,
             top=None, hw=False, deconv=False) -> str:
        top = top or name
        n, c, h, w = self.shapes[bottom]
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        ph, pw = (pad, pad) if isinstance(pad, int) else pad
        p = {"num_output": num_output, "bias_term": bias, "group": group}
        if hw:
            p.update(kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw)
        else:
            p.update(kernel_size=[kh] if kh == kw else [kh, kw], stride=[sh] if sh == sw else [sh, sw],
                     pad=[ph] if ph == pw else [ph, pw])
        if dilation != 1:
            p["dilation"] = [dilation]
        p["weight_filler"] = {"type": "msra"}
        kshape = (c, num_output // group, kh, kw) if deconv else (num_output, c // group, kh, kw)
        blobs = [self._rand(kshape)] + ([self._rand((num_output,), 0.1)] if bias else [])
        self._layer(name, "Deconvolution" if deconv else "Convolution", [bottom], [top],
                    {"param": [{"lr_mult": 1}], "convolution_param": p}, blobs)
        d = dilation
        if deconv:
            oh = sh * (h - 1) + d * (kh - 1) + 1 - 2 * ph
            ow = sw * (w - 1) + d * (kw - 1) + 1 - 2 * pw
        else:
            oh = (h + 2 * ph - (d * (kh - 1) + 1)) // sh + 1
            ow = (w + 2 * pw - (d * (kw - 1) + 1)) // sw + 1
        ins = [self._in(bottom), self._const(name + "_w", blobs[0])] + ([self._const(name + "_b", blobs[1])]
                                                                       if bias else [])
        x = self._out(top, (n, num_output, oh, ow))
        self._node("ConvTranspose" if deconv else "Conv", ins, [x], kernel_shape=[kh, kw], strides=[sh, sw],
                   pads=[ph, pw, ph, pw], group=group, dilations=[d, d])
        return top

    def pool(self, name, bottom, method, kernel=None, stride=1, pad=0, global_pool=False, top=None) -> str:
        top = top or name
        n, c, h, w = self.shapes[bottom]
        p = {"pool": Enum(method)}
        if global_pool:
            p["global_pooling"] = True
            self._layer(name, "Pooling", [bottom], [top], {"pooling_param": p})
            x = self._out(top, (n, c, 1, 1))
            self._node("GlobalMaxPool" if method == "MAX" else "GlobalAveragePool", [self._in(bottom)], [x])
            return top
        p.update(kernel_size=kernel, stride=stride)
        if pad:
            p["pad"] = pad
        self._layer(name, "Pooling", [bottom], [top], {"pooling_param": p})

        def out(size):  # Caffe: round up, then drop a last window that starts in the padding
            o = -(-(size + 2 * pad - kernel) // stride) + 1
            return o - 1 if pad and (o - 1) * stride >= size + pad else o

        x = self._out(top, (n, c, out(h), out(w)))
        attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [pad] * 4, "ceil_mode": 1}
        if method == "AVE":
            attrs["count_include_pad"] = 1
        self._node("MaxPool" if method == "MAX" else "AveragePool", [self._in(bottom)], [x], **attrs)
        return top

    def ip(self, name, bottom, num_output, top=None, transpose=False) -> str:
        top = top or name
        shape = self.shapes[bottom]
        k = math.prod(shape[1:])
        w = self._rand((num_output, k))
        b = self._rand((num_output,), 0.1)
        p = {"num_output": num_output}
        if transpose:
            p["transpose"] = True
        self._layer(name, "InnerProduct", [bottom], [top], {"inner_product_param": p},
                    [np.ascontiguousarray(w.T) if transpose else w, b])
        flat = self._out(top + "_flat", (shape[0], k))
        self._node("Flatten", [self._in(bottom)], [flat], axis=1)
        x = self._out(top, (shape[0], num_output))
        self._node("Gemm", [flat, self._const(name + "_w", w), self._const(name + "_b", b)], [x], transB=1)
        return top

    def _unary(self, name, type_, bottom, top, op, params=None, blobs=None, extra=(), **attrs) -> str:
        top = top or bottom  # in place by default, as deploy files write activations
        self._layer(name, type_, [bottom], [top], params, blobs)
        src = self._in(bottom)
        x = self._out(top, self.shapes[bottom])
        self._node(op, [src, *extra], [x], **attrs)
        return top

    def relu(self, name, bottom, top=None, slope=0.0) -> str:
        if slope:
            return self._unary(name, "ReLU", bottom, top, "LeakyRelu", {"relu_param": {"negative_slope": slope}},
                               alpha=slope)
        return self._unary(name, "ReLU", bottom, top, "Relu")

    def sigmoid(self, name, bottom, top=None) -> str:
        return self._unary(name, "Sigmoid", bottom, top, "Sigmoid")

    def tanh(self, name, bottom, top=None) -> str:
        return self._unary(name, "TanH", bottom, top, "Tanh")

    def dropout(self, name, bottom, top=None) -> str:
        return self._unary(name, "Dropout", bottom, top, "Identity", {"dropout_param": {"dropout_ratio": 0.5}})

    def prelu(self, name, bottom, top=None, shared=False) -> str:
        c = self.shapes[bottom][1]
        slope = self.rng.uniform(0.05, 0.3, (1,) if shared else (c,)).astype(np.float32)
        shaped = slope if shared else slope.reshape(c, 1, 1)
        return self._unary(name, "PReLU", bottom, top, "PRelu", {"prelu_param": {"channel_shared": shared}},
                           [slope], extra=[self._const(name + "_s", shaped)])

    def lrn(self, name, bottom, size=5, alpha=1e-4, beta=0.75, k=1.0, top=None) -> str:
        return self._unary(name, "LRN", bottom, top or name, "LRN",
                           {"lrn_param": {"local_size": size, "alpha": alpha, "beta": beta, "k": k}},
                           size=size, alpha=alpha, beta=beta, bias=k)

    def softmax(self, name, bottom, top=None) -> str:
        return self._unary(name, "Softmax", bottom, top or name, "Softmax", axis=1)

    def power(self, name, bottom, power=2.0, scale=0.5, shift=1.0, top=None) -> str:
        top = top or name
        self._layer(name, "Power", [bottom], [top], {"power_param": {"power": power, "scale": scale, "shift": shift}})
        shape = self.shapes[bottom]
        a = self._out(top + "_mul", shape)
        self._node("Mul", [self._in(bottom), self._const(name + "_a", np.float32(scale))], [a])
        b = self._out(top + "_add", shape)
        self._node("Add", [a, self._const(name + "_b", np.float32(shift))], [b])
        x = self._out(top, shape)
        self._node("Pow", [b, self._const(name + "_p", np.float32(power))], [x])
        return top

    def batchnorm(self, name, bottom, top=None, eps=1e-5) -> str:
        """Caffe BatchNorm with a moving-average factor blob; the ONNX side divides it out."""
        top = top or bottom
        c = self.shapes[bottom][1]
        factor = np.float32(self.rng.uniform(0.5, 2.0))
        mean = self.rng.normal(0, 0.1, c).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        blobs = [mean * factor, var * factor, np.array([factor], np.float32)]
        self._layer(name, "BatchNorm", [bottom], [top],
                    {"batch_norm_param": {"use_global_stats": True, "eps": eps}}, blobs)
        src = self._in(bottom)
        x = self._out(top, self.shapes[bottom])
        ins = [src, self._const(name + "_g", np.ones(c)), self._const(name + "_b0", np.zeros(c)),
               self._const(name + "_m", blobs[0].astype(np.float64) / factor),
               self._const(name + "_v", blobs[1].astype(np.float64) / factor)]
        self._node("BatchNormalization", ins, [x], epsilon=eps)
        return top

    def scale(self, name, bottom, top=None, bias=True) -> str:
        top = top or bottom
        c = self.shapes[bottom][1]
        s = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        b = self.rng.uniform(-0.1, 0.1, c).astype(np.float32)
        self._layer(name, "Scale", [bottom], [top], {"scale_param": {"bias_term": bias}}, [s, b] if bias else [s])
        shape = self.shapes[bottom]
        mid = self._out(top + "_mul", shape)
        self._node("Mul", [self._in(bottom), self._const(name + "_s", s.reshape(c, 1, 1))], [mid])
        x = self._out(top, shape)
        if bias:
            self._node("Add", [mid, self._const(name + "_b", b.reshape(c, 1, 1))], [x])
        else:
            self._node("Identity", [mid], [x])
        return top

    def eltwise(self, name, bottoms, op="SUM", coeff=None, top=None) -> str:
        top = top or name
        p = {"operation": Enum(op)}
        if coeff:
            p["coeff"] = list(coeff)
        self._layer(name, "Eltwise", list(bottoms), [top], {"eltwise_param": p})
        shape = self.shapes[bottoms[0]]
        terms = []
        for i, b in enumerate(bottoms):
            t = self._in(b)
            if coeff and coeff[i] != 1.0:
                scaled = self._out(f"{top}_coeff{i}", shape)
                self._node("Mul", [t, self._const(name + "_k", np.float32(coeff[i]))], [scaled])
                t = scaled
            terms.append(t)
        x = self._out(top, shape)
        self._node({"SUM": "Sum", "PROD": "Mul", "MAX": "Max"}[op], terms, [x])
        return top

    def concat(self, name, bottoms, axis=1, top=None) -> str:
        top = top or name
        self._layer(name, "Concat", list(bottoms), [top], {"concat_param": {"axis": axis}})
        shape = list(self.shapes[bottoms[0]])
        shape[axis] = sum(self.shapes[b][axis] for b in bottoms)
        srcs = [self._in(b) for b in bottoms]
        self._node("Concat", srcs, [self._out(top, tuple(shape))], axis=axis)
        return top

    def slice(self, name, bottom, tops, points, axis=1) -> list[str]:
        self._layer(name, "Slice", [bottom], list(tops), {"slice_param": {"axis": axis, "slice_point": list(points)}})
        shape = self.shapes[bottom]
        bounds = [0, *points, shape[axis]]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        src = self._in(bottom)
        outs = []
        for t, s in zip(tops, sizes):
            sh = list(shape)
            sh[axis] = s
            outs.append(self._out(t, tuple(sh)))
        split = self._const(name + "_split", np.array(sizes, np.int64))
        self.inits[-1] = numpy_helper.from_array(np.array(sizes, np.int64), split)
        self._node("Split", [src, split], outs, axis=axis)
        return list(tops)

    def flatten(self, name, bottom, top=None) -> str:
        top = top or name
        self._layer(name, "Flatten", [bottom], [top])
        shape = self.shapes[bottom]
        src = self._in(bottom)
        self._node("Flatten", [src], [self._out(top, (shape[0], math.prod(shape[1:])))], axis=1)
        return top

    def reshape(self, name, bottom, dims, top=None) -> str:
        """Caffe dims (0 copies, -1 infers) with the default axis 0 / num_axes -1."""
        top = top or name
        self._layer(name, "Reshape", [bottom], [top], {"reshape_param": {"shape": {"dim": list(dims)}}})
        shape = self.shapes[bottom]
        out = [shape[i] if d == 0 else d for i, d in enumerate(dims)]
        if -1 in out:
            out[out.index(-1)] = math.prod(shape) // -math.prod(out)
        target = self._const(name + "_shape", np.array(out, np.int64))
        self.inits[-1] = numpy_helper.from_array(np.array(out, np.int64), target)
        src = self._in(bottom)
        self._node("Reshape", [src, target], [self._out(top, tuple(out))])
        return top

    # ------------------------------------------------------------------ outputs

    def prototxt(self) -> str:
        return "\n".join(self.text) + "\n"

    def caffemodel(self) -> bytes:
        return caffemodel_bytes(self.blobs, self.name)

    def onnx(self, outputs: list[str]) -> onnx.ModelProto:
        nodes = list(self.nodes)
        outs = []
        for blob in outputs:
            nodes.append(helper.make_node("Identity", [self._in(blob)], [blob]))
            outs.append(helper.make_tensor_value_info(blob, TensorProto.FLOAT, self.shapes[blob]))
        graph = helper.make_graph(nodes, self.name, [helper.make_tensor_value_info(
            "data", TensorProto.FLOAT, self.input_shape)], outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.checker.check_model(model)
        return model

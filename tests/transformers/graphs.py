"""ViT- and Swin-style ONNX graphs written with onnx.helper, seeded random weights, batch axis 'N'.

They reproduce the patterns of exported vision transformers without needing PyTorch: shapes
computed from ``Shape`` with Gather/Unsqueeze/Concat/Mod (so they only build once the batch is
bound), a patch-embedding convolution, a class token broadcast with Expand and concatenated, a
position embedding, LayerNormalization, multi-head attention as MatMul/Transpose/Reshape/
Softmax with a scale, MLPs with GELU in its erf and its tanh form, residual adds; for Swin, a
window partition (Reshape/Transpose), a cyclic shift made of Slice+Concat, a relative position
bias gathered from a table and an attention mask built with ScatterND/Equal/Where.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


class GraphBuilder:
    """Nodes, initializers and fresh names for one graph."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value, base: str = "c") -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, scale: float | None = None) -> str:
        scale = 1.0 / math.sqrt(shape[0]) if scale is None else scale
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs[0] if n_out == 1 else outs

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64), "i")

    # ---- shape arithmetic as exporters write it

    def dim(self, x: str, axis: int) -> str:
        """A 1-element int64 tensor holding x.shape[axis]."""
        return self.op("Unsqueeze", [self.op("Gather", [self.op("Shape", [x]), self.const(np.int64(axis))]),
                                     self.ints(0)])

    def shape_of(self, *parts: str | int) -> str:
        return self.op("Concat", [p if isinstance(p, str) else self.ints(p) for p in parts], axis=0)

    # ---- layers

    def linear(self, x: str, k: int, n: int) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.weight(k, n)]), self.weight(n, scale=0.1)])

    def layer_norm(self, x: str, c: int) -> str:
        gamma = self.const((1 + 0.1 * self.rng.standard_normal(c)).astype(np.float32))
        return self.op("LayerNormalization", [x, gamma, self.weight(c, scale=0.1)], axis=-1, epsilon=1e-5)

    def gelu_erf(self, x: str) -> str:
        e = self.op("Erf", [self.op("Div", [x, self.const(np.float32(math.sqrt(2.0)))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.const(np.float32(1))])]),
                               self.const(np.float32(0.5))])

    def gelu_tanh(self, x: str) -> str:
        cube = self.op("Pow", [x, self.const(np.float32(3))])
        inner = self.op("Add", [x, self.op("Mul", [cube, self.const(np.float32(0.044715))])])
        t = self.op("Tanh", [self.op("Mul", [inner, self.const(np.float32(math.sqrt(2 / math.pi)))])])
        return self.op("Mul", [self.op("Mul", [x, self.const(np.float32(0.5))]),
                               self.op("Add", [t, self.const(np.float32(1))])])

    def attention(self, x: str, dim: int, heads: int, lead: str, on_scores=None) -> str:
        """Multi-head self-attention of x (B, T, dim); ``lead`` holds B; ``on_scores`` edits the logits."""
        d = dim // heads
        tokens = self.dim(x, -2)

        def split(t: str) -> str:  # (B, T, dim) -> (B, heads, T, d)
            return self.op("Transpose", [self.op("Reshape", [t, self.shape_of(lead, tokens, heads, d)])],
                           perm=[0, 2, 1, 3])

        q, k, v = (split(self.linear(x, dim, dim)) for _ in range(3))
        kt = self.op("Transpose", [k], perm=[0, 1, 3, 2])
        scores = self.op("Mul", [self.op("MatMul", [q, kt]), self.const(np.float32(d ** -0.5))])
        if on_scores is not None:
            scores = on_scores(scores)
        probs = self.op("Softmax", [scores], axis=-1)
        ctx = self.op("Transpose", [self.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        return self.linear(self.op("Reshape", [ctx, self.shape_of(lead, tokens, dim)]), dim, dim)

    def mlp(self, x: str, dim: int, hidden: int, gelu: str) -> str:
        h = self.linear(x, dim, hidden)
        return self.linear(self.gelu_erf(h) if gelu == "erf" else self.gelu_tanh(h), hidden, dim)

    def model(self, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def vit_like(image: int = 32, patch: int = 8, dim: int = 64, heads: int = 4, layers: int = 2,
             classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    g = GraphBuilder(seed)
    tokens = (image // patch) ** 2
    x = g.op("Conv", ["x", g.weight(dim, 3, patch, patch, scale=0.2), g.weight(dim, scale=0.1)],
             kernel_shape=[patch, patch], strides=[patch, patch])
    batch = g.dim(x, 0)
    x = g.op("Transpose", [g.op("Reshape", [x, g.shape_of(batch, dim, -1)])], perm=[0, 2, 1])
    cls = g.op("Expand", [g.weight(1, 1, dim, scale=0.5), g.shape_of(batch, 1, dim)])
    x = g.op("Add", [g.op("Concat", [cls, x], axis=1), g.weight(1, tokens + 1, dim, scale=0.5)])
    for i in range(layers):
        x = g.op("Add", [x, g.attention(g.layer_norm(x, dim), dim, heads, batch)])
        x = g.op("Add", [x, g.mlp(g.layer_norm(x, dim), dim, 2 * dim, "erf" if i % 2 == 0 else "tanh")])
    first = g.op("Gather", [g.layer_norm(x, dim), g.const(np.int64(0))], axis=1)
    g.op("Gemm", [first, g.weight(dim, classes), g.weight(classes, scale=0.1)])
    g.nodes[-1].output[0] = "y"
    return g.model([helper.make_tensor_value_info("x", F32, ["N", 3, image, image])],
                   [helper.make_tensor_value_info("y", F32, ["N", classes])])


def _relative_index(win: int) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(win), np.arange(win), indexing="ij")
    coords = np.stack([ys.ravel(), xs.ravel()])
    rel = coords[:, :, None] - coords[:, None, :] + (win - 1)
    return (rel[0] * (2 * win - 1) + rel[1]).reshape(-1).astype(np.int64)


def _roll(g: GraphBuilder, x: str, shift: int, axes: tuple[int, ...]) -> str:
    """torch.roll(x, shift, axes) as exporters write it: Slice + Concat per axis."""
    for a in axes:
        head = g.op("Slice", [x, g.ints(-shift), g.ints(2**62), g.ints(a)])
        tail = g.op("Slice", [x, g.ints(0), g.ints(-shift), g.ints(a)])
        x = g.op("Concat", [head, tail], axis=a)
    return x


def _shift_mask(g: GraphBuilder, size: int, win: int, shift: int) -> str:
    """The (windows, win², win²) shifted-window mask, computed by the graph from a ScatterND'd label map."""
    cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
    idx, upd, label = [], [], 0
    for r in cuts:
        for c in cuts:
            for i in range(size)[r]:
                for j in range(size)[c]:
                    idx.append((i, j))
                    upd.append(label)
            label += 1
    region = g.op("ScatterND", [g.op("ConstantOfShape", [g.ints(size, size)],
                                     value=numpy_helper.from_array(np.array([0], np.int64))),
                                g.const(np.array(idx, np.int64)), g.const(np.array(upd, np.int64))])
    n = size // win
    region = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [region, g.ints(n, win, n, win)])],
                                   perm=[0, 2, 1, 3]), g.ints(n * n, win * win)])
    diff = g.op("Sub", [g.op("Unsqueeze", [region, g.ints(1)]), g.op("Unsqueeze", [region, g.ints(2)])])
    same = g.op("Equal", [diff, g.const(np.int64(0))])
    return g.op("Where", [same, g.const(np.float32(0)), g.const(np.float32(-100))])


def swin_like(size: int = 8, dim: int = 32, heads: int = 2, win: int = 4, seed: int = 1) -> onnx.ModelProto:
    """Two Swin blocks (regular, then shifted windows) on a (N, size, size, dim) channels-last map."""
    g = GraphBuilder(seed)
    x = "x"
    batch = g.dim(x, 0)
    n = size // win
    for shift in (0, win // 2):
        y = g.layer_norm(x, dim)
        if shift:
            y = _roll(g, y, shift, (1, 2))
        y = g.op("Reshape", [y, g.shape_of(batch, n, win, n, win, dim)])
        y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 1, 3, 2, 4, 5]), g.shape_of(-1, win * win, dim)])
        table = g.weight((2 * win - 1) ** 2, heads, scale=0.5)
        bias = g.op("Gather", [table, g.const(_relative_index(win))], axis=0)
        bias = g.op("Transpose", [g.op("Reshape", [bias, g.ints(win * win, win * win, heads)])], perm=[2, 0, 1])
        def on_scores(scores, bias=bias, shift=shift, t=win * win):
            scores = g.op("Add", [scores, bias])  # (N·n², heads, T, T) + (heads, T, T)
            if not shift:
                return scores
            mask = g.op("Unsqueeze", [_shift_mask(g, size, win, shift), g.ints(0, 2)])  # (1, n², 1, T, T)
            scores = g.op("Reshape", [scores, g.shape_of(batch, n * n, heads, t, t)])
            return g.op("Reshape", [g.op("Add", [scores, mask]), g.shape_of(-1, heads, t, t)])

        y = g.attention(y, dim, heads, g.dim(y, 0), on_scores)
        y = g.op("Reshape", [y, g.shape_of(batch, n, n, win, win, dim)])
        y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 1, 3, 2, 4, 5]), g.shape_of(batch, size, size, dim)])
        if shift:
            y = _roll(g, y, size - shift, (1, 2))
        x = g.op("Add", [x, y])
        x = g.op("Add", [x, g.mlp(g.layer_norm(x, dim), dim, 2 * dim, "erf")])
    g.nodes[-1].output[0] = "y"
    return g.model([helper.make_tensor_value_info("x", F32, ["N", size, size, dim])],
                   [helper.make_tensor_value_info("y", F32, ["N", size, size, dim])])

"""Reference CNNs written as ONNX graphs in code, with seeded random weights.

They look like PyTorch exports: a symbolic batch dimension, BatchNormalization after every
convolution, and the Shape → Gather → Unsqueeze → Concat → Reshape flatten that dynamic-batch
exports emit. The builder must fold all of that away, so these double as parser and optimizer
workloads. Weights are He-initialised so activations keep a sensible scale through deep stacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# Small BN gammas on the last layer of each residual branch keep activations bounded through deep
# stacks (the same idea as zero-initialised residual gammas), so fp16 runs stay far from overflow.
RESIDUAL_GAMMA = (0.1, 0.3)


@dataclass
class _GraphBuilder:
    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    counter: int = 0

    def name(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def const(self, value: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], base: str, n_out: int = 1, **attrs) -> list[str]:
        name = self.name(base)
        outs = [name] if n_out == 1 else [f"{name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                act: str | None = "Relu", gamma: tuple[float, float] = (0.5, 1.5)) -> str:
        fan_in = cin // groups * k * k
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        (y,) = self.node("Conv", [x, self.const(w, "conv_w")], "conv", kernel_shape=[k, k],
                         strides=[stride, stride], pads=[k // 2] * 4, group=groups)
        gamma_v = self.rng.uniform(*gamma, cout).astype(np.float32)
        beta = self.rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        mean = self.rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        var = self.rng.uniform(0.5, 1.5, cout).astype(np.float32)
        (y,) = self.node("BatchNormalization", [y] + [self.const(v, "bn") for v in (gamma_v, beta, mean, var)],
                         "bn", epsilon=1e-5)
        if act == "Relu":
            (y,) = self.node("Relu", [y], "relu")
        elif act == "Relu6":
            (y,) = self.node("Clip", [y, self.const(np.float32(0), "min"), self.const(np.float32(6), "max")],
                             "relu6")
        elif act == "SiLU":
            y = self.silu(y)
        return y

    def silu(self, x: str) -> str:
        """x * sigmoid(x), as PyTorch exports SiLU below opset 22."""
        (s,) = self.node("Sigmoid", [x], "sigmoid")
        (y,) = self.node("Mul", [x, s], "silu")
        return y

    def conv_bias(self, x: str, cin: int, cout: int) -> str:
        """A 1x1 convolution with a bias and no normalization (squeeze-and-excitation layers)."""
        w = (self.rng.standard_normal((cout, cin, 1, 1)) * np.sqrt(2.0 / cin)).astype(np.float32)
        b = self.rng.uniform(-0.2, 0.2, cout).astype(np.float32)
        (y,) = self.node("Conv", [x, self.const(w, "conv_w"), self.const(b, "conv_b")], "conv",
                         kernel_shape=[1, 1])
        return y

    def squeeze_excite(self, x: str, channels: int, squeezed: int) -> str:
        """x * sigmoid(W2 silu(W1 mean(x))): the channel gate of EfficientNet's MBConv blocks."""
        (s,) = self.node("GlobalAveragePool", [x], "se_pool")
        s = self.silu(self.conv_bias(s, channels, squeezed))
        (s,) = self.node("Sigmoid", [self.conv_bias(s, squeezed, channels)], "se_gate")
        (y,) = self.node("Mul", [x, s], "se_scale")
        return y

    def flatten_dynamic(self, x: str) -> str:
        """x.view(x.size(0), -1) as PyTorch exports it with a dynamic batch."""
        (shape,) = self.node("Shape", [x], "shape")
        (n,) = self.node("Gather", [shape, self.const(np.array(0, np.int64), "idx")], "gather", axis=0)
        (n1,) = self.node("Unsqueeze", [n, self.const(np.array([0], np.int64), "axes")], "unsqueeze")
        (target,) = self.node("Concat", [n1, self.const(np.array([-1], np.int64), "minus1")], "concat", axis=0)
        (y,) = self.node("Reshape", [x, target], "reshape")
        return y

    def classifier(self, x: str, cin: int, classes: int) -> str:
        (y,) = self.node("GlobalAveragePool", [x], "gap")
        y = self.flatten_dynamic(y)
        w = (self.rng.standard_normal((classes, cin)) / np.sqrt(cin)).astype(np.float32)
        b = self.rng.uniform(-0.1, 0.1, classes).astype(np.float32)
        (y,) = self.node("Gemm", [y, self.const(w, "fc_w"), self.const(b, "fc_b")], "fc", transB=1)
        return y

    def model(self, name: str, x: str, y: str, image: int, classes: int) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 3, image, image])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", classes])],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="hetrt.models")
        model.ir_version = 8  # the IR that opset 17 shipped with; newer IRs are refused by older runtimes
        onnx.checker.check_model(model)
        return model


def resnet(depth: int = 18, image: int = 224, classes: int = 1000, width: int = 64, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks), torchvision layout."""
    layouts = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}
    if depth not in layouts:
        raise ValueError(f"resnet depth must be one of {sorted(layouts)}, got {depth}")
    block, counts = layouts[depth]
    g = _GraphBuilder(np.random.default_rng(seed))
    x = "input"
    y = g.conv_bn(x, 3, width, 7, stride=2)
    (y,) = g.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    expansion = 4 if block == "bottleneck" else 1
    for stage, n in enumerate(counts):
        planes = width * 2**stage
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            cout = planes * expansion
            if block == "basic":
                z = g.conv_bn(y, cin, planes, 3, stride)
                z = g.conv_bn(z, planes, planes, 3, 1, act=None, gamma=RESIDUAL_GAMMA)
            else:
                z = g.conv_bn(y, cin, planes, 1)
                z = g.conv_bn(z, planes, planes, 3, stride)
                z = g.conv_bn(z, planes, cout, 1, act=None, gamma=RESIDUAL_GAMMA)
            shortcut = g.conv_bn(y, cin, cout, 1, stride, act=None) if (stride != 1 or cin != cout) else y
            (y,) = g.node("Add", [z, shortcut], "add")
            (y,) = g.node("Relu", [y], "relu")
            cin = cout
    out = g.classifier(y, cin, classes)
    return g.model(f"resnet{depth}", x, out, image, classes)


def mobilenet_v2(image: int = 224, classes: int = 1000, width: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2: inverted residuals with depthwise 3×3 convolutions and ReLU6."""

    def ch(c: float) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    g = _GraphBuilder(np.random.default_rng(seed))
    x = "input"
    cin = ch(32)
    y = g.conv_bn(x, 3, cin, 3, stride=2, act="Relu6")
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    for t, c, n, s in settings:
        cout = ch(c)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            z = g.conv_bn(y, cin, hidden, 1, act="Relu6") if t != 1 else y
            z = g.conv_bn(z, hidden, hidden, 3, stride, groups=hidden, act="Relu6")
            z = g.conv_bn(z, hidden, cout, 1, act=None)
            if stride == 1 and cin == cout:
                (z,) = g.node("Add", [z, y], "add")
            y, cin = z, cout
    y = g.conv_bn(y, cin, 1280, 1, act="Relu6")
    out = g.classifier(y, 1280, classes)
    return g.model("mobilenet_v2", x, out, image, classes)


# EfficientNet-B0 stages: (expansion, kernel, stride, output channels, blocks), torchvision's table.
EFFICIENTNET_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def efficientnet_b0(image: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """EfficientNet-B0: MBConv blocks (expand, depthwise, squeeze-and-excitation, project) with SiLU."""
    g = _GraphBuilder(np.random.default_rng(seed))
    x = "input"
    cin = 32
    y = g.conv_bn(x, 3, cin, 3, stride=2, act="SiLU")
    for t, k, s, c, n in EFFICIENTNET_B0_STAGES:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            z = g.conv_bn(y, cin, hidden, 1, act="SiLU") if t != 1 else y
            z = g.conv_bn(z, hidden, hidden, k, stride, groups=hidden, act="SiLU")
            z = g.squeeze_excite(z, hidden, max(1, cin // 4))
            residual = stride == 1 and cin == c
            z = g.conv_bn(z, hidden, c, 1, act=None, gamma=RESIDUAL_GAMMA if residual else (0.5, 1.5))
            if residual:
                (z,) = g.node("Add", [z, y], "add")
            y, cin = z, c
    y = g.conv_bn(y, cin, 1280, 1, act="SiLU")
    out = g.classifier(y, 1280, classes)
    return g.model("efficientnet_b0", x, out, image, classes)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[], onnx.ModelProto]
    description: str


MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry("resnet18", lambda: resnet(18), "ResNet-18, 224×224, random weights (the default model)"),
        ModelEntry("resnet50", lambda: resnet(50), "ResNet-50 v1.5, 224×224, random weights"),
        ModelEntry("mobilenet_v2", lambda: mobilenet_v2(), "MobileNetV2 1.0, 224×224, random weights"),
        ModelEntry("efficientnet_b0", lambda: efficientnet_b0(), "EfficientNet-B0, 224×224, random weights"),
        ModelEntry("resnet18_small", lambda: resnet(18, image=64, classes=10, width=16),
                   "ResNet-18 at 1/4 width, 64×64, 10 classes (fast tests)"),
    )
}

DEFAULT_MODEL = "resnet18"


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(name: str) -> onnx.ModelProto:
    try:
        return MODELS[name].build()
    except KeyError:
        raise ValueError(f"unknown bundled model '{name}'; choose one of {', '.join(model_names())}") from None

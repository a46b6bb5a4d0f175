"""Real CNN architectures as ONNX graphs built in code (random weights; never saved to the repository).

The layer structure follows the published networks and their PyTorch exports: activations as the
exporters write them (SiLU = Sigmoid + Mul, HardSwish / HardSigmoid ops, ReLU6 = Clip), squeeze-and-
excitation as GlobalAveragePool -> 1x1 convs -> gate -> Mul, channel shuffle as Reshape-Transpose-
Reshape, nearest upsampling as Resize. Used by bench/dla_coverage.py and bench/dla_validation.py.
"""

from __future__ import annotations

import numpy as np
import onnx

from engine.models.zoo import _GraphBuilder


class _G(_GraphBuilder):
    def act(self, y: str, kind: str | None) -> str:
        if kind is None:
            return y
        if kind == "silu":
            (s,) = self.node("Sigmoid", [y], "sigmoid")
            (y,) = self.node("Mul", [y, s], "mul")
        elif kind == "hswish":
            (y,) = self.node("HardSwish", [y], "hardswish")
        elif kind == "relu":
            (y,) = self.node("Relu", [y], "relu")
        elif kind == "relu6":
            (y,) = self.node("Clip", [y, self.const(np.float32(0), "min"), self.const(np.float32(6), "max")], "relu6")
        return y

    def cba(self, x: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        return self.act(self.conv_bn(x, cin, cout, k, stride, groups, act=None), act)

    def se(self, x: str, c: int, squeeze: int, act: str, gate: str) -> str:
        (p,) = self.node("GlobalAveragePool", [x], "se_pool")
        w1 = (self.rng.standard_normal((squeeze, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        (z,) = self.node("Conv", [p, self.const(w1, "se_w1"), self.const(np.zeros(squeeze, np.float32), "b")],
                         "se_fc1", kernel_shape=[1, 1])
        z = self.act(z, act)
        w2 = (self.rng.standard_normal((c, squeeze, 1, 1)) / np.sqrt(squeeze)).astype(np.float32)
        (z,) = self.node("Conv", [z, self.const(w2, "se_w2"), self.const(np.zeros(c, np.float32), "b")],
                         "se_fc2", kernel_shape=[1, 1])
        (z,) = self.node("Sigmoid" if gate == "sigmoid" else "HardSigmoid", [z], "se_gate",
                         **({} if gate == "sigmoid" else {"alpha": 1 / 6, "beta": 0.5}))
        (y,) = self.node("Mul", [x, z], "se_mul")
        return y

    def finish(self, name: str, y: str, cin: int, image: int, classes: int = 1000) -> onnx.ModelProto:
        return self.model(name, "input", self.classifier(y, cin, classes), image, classes)


def resnext50(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNeXt-50 32x4d: bottlenecks whose 3x3 is a 32-group convolution."""
    g = _G(np.random.default_rng(seed))
    y = g.cba("input", 3, 64, 7, 2)
    (y,) = g.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, n in enumerate([3, 4, 6, 3]):
        width, cout = 128 * 2**stage, 256 * 2**stage
        for i in range(n):
            s = 2 if i == 0 and stage > 0 else 1
            z = g.cba(y, cin, width, 1)
            z = g.cba(z, width, width, 3, s, groups=32)
            z = g.cba(z, width, cout, 1, act=None)
            sc = g.cba(y, cin, cout, 1, s, act=None) if i == 0 else y
            (y,) = g.node("Add", [z, sc], "add")
            y, cin = g.act(y, "relu"), cout
    return g.finish("resnext50_32x4d", y, cin, image)


def mobilenet_v3_small(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV3-Small: hard-swish, SE blocks gated by hard-sigmoid, depthwise 3x3/5x5."""
    g = _G(np.random.default_rng(seed))
    y = g.cba("input", 3, 16, 3, 2, act="hswish")
    cin = 16
    cfg = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
           (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
           (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
           (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1)]
    for k, exp, cout, se, act, s in cfg:
        z = g.cba(y, cin, exp, 1, act=act) if exp != cin else y
        z = g.cba(z, exp, exp, k, s, groups=exp, act=act)
        if se:
            z = g.se(z, exp, max(8, (exp // 4 + 4) // 8 * 8), "relu", "hsigmoid")
        z = g.cba(z, exp, cout, 1, act=None)
        if s == 1 and cin == cout:
            (z,) = g.node("Add", [z, y], "add")
        y, cin = z, cout
    y = g.cba(y, cin, 576, 1, act="hswish")
    return g.finish("mobilenet_v3_small", y, 576, image)


def efficientnet_b0(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """EfficientNet-B0: MBConv with SiLU (Sigmoid * x) and SE gated by sigmoid."""
    g = _G(np.random.default_rng(seed))
    y = g.cba("input", 3, 32, 3, 2, act="silu")
    cin = 32
    for t, k, s, cout, n in [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            exp = cin * t
            z = g.cba(y, cin, exp, 1, act="silu") if t != 1 else y
            z = g.cba(z, exp, exp, k, stride, groups=exp, act="silu")
            z = g.se(z, exp, max(1, cin // 4), "silu", "sigmoid")
            z = g.cba(z, exp, cout, 1, act=None)
            if stride == 1 and cin == cout:
                (z,) = g.node("Add", [z, y], "add")
            y, cin = z, cout
    y = g.cba(y, cin, 1280, 1, act="silu")
    return g.finish("efficientnet_b0", y, 1280, image)


def _shuffle(g: _G, x: str, c: int, hw: int) -> str:
    (y,) = g.node("Reshape", [x, g.const(np.array([1, 2, c // 2, hw, hw], np.int64), "shape")], "reshape")
    (y,) = g.node("Transpose", [y], "transpose", perm=[0, 2, 1, 3, 4])
    (y,) = g.node("Reshape", [y, g.const(np.array([1, c, hw, hw], np.int64), "shape")], "reshape")
    return y


def shufflenet_v2(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ShuffleNetV2 1.0x: channel split, depthwise 3x3, concat and channel shuffle (batch 1 export)."""
    g = _G(np.random.default_rng(seed))
    y = g.cba("input", 3, 24, 3, 2)
    (y,) = g.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, hw = 24, image // 4
    for cout, n in [(116, 4), (232, 8), (464, 4)]:
        for i in range(n):
            half = cout // 2
            if i == 0:
                hw //= 2
                a = g.cba(y, cin, cin, 3, 2, groups=cin, act=None)
                a = g.cba(a, cin, half, 1)
                b = g.cba(y, cin, half, 1)
                b = g.cba(b, half, half, 3, 2, groups=half, act=None)
                b = g.cba(b, half, half, 1)
            else:
                a, b = g.node("Split", [y, g.const(np.array([half, half], np.int64), "split")], "split",
                              n_out=2, axis=1)
                b = g.cba(b, half, half, 1)
                b = g.cba(b, half, half, 3, 1, groups=half, act=None)
                b = g.cba(b, half, half, 1)
            (y,) = g.node("Concat", [a, b], "concat", axis=1)
            y, cin = _shuffle(g, y, cout, hw), cout
    y = g.cba(y, cin, 1024, 1)
    return g.finish("shufflenet_v2", y, 1024, image)


def densenet121(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """DenseNet-121: BN-ReLU-Conv layers whose outputs are concatenated, average-pool transitions."""
    g = _G(np.random.default_rng(seed))
    y = g.cba("input", 3, 64, 7, 2)
    (y,) = g.node("MaxPool", [y], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c = 64
    for bi, n in enumerate([6, 12, 24, 16]):
        for _ in range(n):
            z = g.cba(y, c, 128, 1)
            z = g.cba(z, 128, 32, 3)
            (y,) = g.node("Concat", [y, z], "concat", axis=1)
            c += 32
        if bi < 3:
            y = g.cba(y, c, c // 2, 1)
            (y,) = g.node("AveragePool", [y], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
            c //= 2
    return g.finish("densenet121", y, c, image)


def _c3(g: _G, x: str, cin: int, cout: int, n: int, shortcut: bool = True) -> str:
    h = cout // 2
    a = g.cba(x, cin, h, 1, act="silu")
    for _ in range(n):
        z = g.cba(g.cba(a, h, h, 1, act="silu"), h, h, 3, act="silu")
        if shortcut:
            (z,) = g.node("Add", [a, z], "add")
        a = z
    b = g.cba(x, cin, h, 1, act="silu")
    (y,) = g.node("Concat", [a, b], "concat", axis=1)
    return g.cba(y, 2 * h, cout, 1, act="silu")


def yolov5s_backbone(image: int = 640, seed: int = 0) -> onnx.ModelProto:
    """YOLOv5s backbone + PANet neck at detector resolution (640x640): C3 blocks, SPPF, nearest
    upsampling and concatenations; three feature maps out (the detect heads' inputs)."""
    from onnx import TensorProto, helper

    g = _G(np.random.default_rng(seed))
    w = (g.rng.standard_normal((32, 3, 6, 6)) * np.sqrt(2.0 / 108)).astype(np.float32)
    (y,) = g.node("Conv", ["input", g.const(w, "conv_w"), g.const(np.zeros(32, np.float32), "b")], "conv",
                  kernel_shape=[6, 6], strides=[2, 2], pads=[2, 2, 2, 2])  # v6.0 stem: 6x6/2, pad 2
    y = g.act(y, "silu")
    y = g.cba(y, 32, 64, 3, 2, act="silu")
    y = _c3(g, y, 64, 64, 1)
    y = g.cba(y, 64, 128, 3, 2, act="silu")
    p3 = _c3(g, y, 128, 128, 2)
    y = g.cba(p3, 128, 256, 3, 2, act="silu")
    p4 = _c3(g, y, 256, 256, 3)
    y = g.cba(p4, 256, 512, 3, 2, act="silu")
    y = _c3(g, y, 512, 512, 1)
    y = g.cba(y, 512, 256, 1, act="silu")  # SPPF
    pools = [y]
    for _ in range(3):
        (p,) = g.node("MaxPool", [pools[-1]], "maxpool", kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
        pools.append(p)
    (y,) = g.node("Concat", pools, "concat", axis=1)
    p5 = g.cba(y, 1024, 512, 1, act="silu")
    h5 = g.cba(p5, 512, 256, 1, act="silu")
    (u,) = g.node("Resize", [h5, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], "resize",
                  mode="nearest")
    (y,) = g.node("Concat", [u, p4], "concat", axis=1)
    y = _c3(g, y, 512, 256, 1, False)
    h4 = g.cba(y, 256, 128, 1, act="silu")
    (u,) = g.node("Resize", [h4, "", g.const(np.array([1, 1, 2, 2], np.float32), "scales")], "resize",
                  mode="nearest")
    (y,) = g.node("Concat", [u, p3], "concat", axis=1)
    o3 = _c3(g, y, 256, 128, 1, False)
    y = g.cba(o3, 128, 128, 3, 2, act="silu")
    (y,) = g.node("Concat", [y, h4], "concat", axis=1)
    o4 = _c3(g, y, 256, 256, 1, False)
    y = g.cba(o4, 256, 256, 3, 2, act="silu")
    (y,) = g.node("Concat", [y, h5], "concat", axis=1)
    o5 = _c3(g, y, 512, 512, 1, False)
    outs = [(o3, 128, image // 8), (o4, 256, image // 16), (o5, 512, image // 32)]
    graph = helper.make_graph(
        g.nodes, "yolov5s_backbone",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, image, image])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, c, s, s]) for o, c, s in outs], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hetrt.bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


ARCHS = {"resnext50_32x4d": resnext50, "mobilenet_v3_small": mobilenet_v3_small, "efficientnet_b0": efficientnet_b0,
         "shufflenet_v2": shufflenet_v2, "densenet121": densenet121, "yolov5s_640": yolov5s_backbone}

"""LeNet, AlexNet, GoogLeNet and ResNet-50 as Caffe deploy networks (layer for layer as their
published deploy prototxts lay them out), at small inputs and, for the large ones, reduced channel
widths so the tests stay fast. Each returns the ``Net`` and its output blob."""

from __future__ import annotations

from netdsl import Net


def lenet(seed: int = 1) -> tuple[Net, str]:
    n = Net("LeNet", (1, 1, 28, 28), seed)
    n.conv("conv1", "data", 20, 5)
    n.pool("pool1", "conv1", "MAX", 2, 2)
    n.conv("conv2", "pool1", 50, 5)
    n.pool("pool2", "conv2", "MAX", 2, 2)
    n.ip("ip1", "pool2", 500)
    n.relu("relu1", "ip1")
    n.ip("ip2", "ip1", 10)
    return n, n.softmax("prob", "ip2")


def alexnet(seed: int = 2, width: int = 4) -> tuple[Net, str]:
    """AlexNet (bvlc_alexnet deploy): grouped convolutions, LRN after conv1/conv2, dropout in fc6/fc7."""
    n = Net("AlexNet", (1, 3, 67, 67), seed)
    n.conv("conv1", "data", 96 // width, 11, stride=4)
    n.relu("relu1", "conv1")
    n.lrn("norm1", "conv1", 5, 1e-4, 0.75)
    n.pool("pool1", "norm1", "MAX", 3, 2)
    n.conv("conv2", "pool1", 256 // width, 5, pad=2, group=2)
    n.relu("relu2", "conv2")
    n.lrn("norm2", "conv2", 5, 1e-4, 0.75)
    n.pool("pool2", "norm2", "MAX", 3, 2)
    n.conv("conv3", "pool2", 384 // width, 3, pad=1)
    n.relu("relu3", "conv3")
    n.conv("conv4", "conv3", 384 // width, 3, pad=1, group=2)
    n.relu("relu4", "conv4")
    n.conv("conv5", "conv4", 256 // width, 3, pad=1, group=2)
    n.relu("relu5", "conv5")
    n.pool("pool5", "conv5", "MAX", 3, 2)
    n.ip("fc6", "pool5", 4096 // (4 * width))
    n.relu("relu6", "fc6")
    n.dropout("drop6", "fc6")
    n.ip("fc7", "fc6", 4096 // (4 * width))
    n.relu("relu7", "fc7")
    n.dropout("drop7", "fc7")
    n.ip("fc8", "fc7", 1000 // width)
    return n, n.softmax("prob", "fc8")


def _inception(n: Net, name: str, bottom: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> str:
    a = n.conv(f"{name}/1x1", bottom, c1, 1)
    n.relu(f"{name}/relu_1x1", a)
    b = n.conv(f"{name}/3x3_reduce", bottom, c3r, 1)
    n.relu(f"{name}/relu_3x3_reduce", b)
    b = n.conv(f"{name}/3x3", b, c3, 3, pad=1)
    n.relu(f"{name}/relu_3x3", b)
    c = n.conv(f"{name}/5x5_reduce", bottom, c5r, 1)
    n.relu(f"{name}/relu_5x5_reduce", c)
    c = n.conv(f"{name}/5x5", c, c5, 5, pad=2)
    n.relu(f"{name}/relu_5x5", c)
    d = n.pool(f"{name}/pool", bottom, "MAX", 3, 1, pad=1)
    d = n.conv(f"{name}/pool_proj", d, pp, 1)
    n.relu(f"{name}/relu_pool_proj", d)
    return n.concat(f"{name}/output", [a, b, c, d])


INCEPTIONS = [  # bvlc_googlenet: name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
    ("inception_3a", 64, 96, 128, 16, 32, 32), ("inception_3b", 128, 128, 192, 32, 96, 64), None,
    ("inception_4a", 192, 96, 208, 16, 48, 64), ("inception_4b", 160, 112, 224, 24, 64, 64),
    ("inception_4c", 128, 128, 256, 24, 64, 64), ("inception_4d", 112, 144, 288, 32, 64, 64),
    ("inception_4e", 256, 160, 320, 32, 128, 128), None,
    ("inception_5a", 256, 160, 320, 32, 128, 128), ("inception_5b", 384, 192, 384, 48, 128, 128),
]


def googlenet(seed: int = 3, width: int = 4) -> tuple[Net, str]:
    """GoogLeNet (bvlc_googlenet deploy): the stem, nine inception modules, ceil-mode pools, LRN."""
    n = Net("GoogleNet", (1, 3, 64, 64), seed)
    x = n.conv("conv1/7x7_s2", "data", 64 // width, 7, stride=2, pad=3)
    n.relu("conv1/relu_7x7", x)
    x = n.pool("pool1/3x3_s2", x, "MAX", 3, 2)
    x = n.lrn("pool1/norm1", x, 5, 1e-4, 0.75)
    x = n.conv("conv2/3x3_reduce", x, 64 // width, 1)
    n.relu("conv2/relu_3x3_reduce", x)
    x = n.conv("conv2/3x3", x, 192 // width, 3, pad=1)
    n.relu("conv2/relu_3x3", x)
    x = n.lrn("conv2/norm2", x, 5, 1e-4, 0.75)
    x = n.pool("pool2/3x3_s2", x, "MAX", 3, 2)
    pools = iter(["pool3/3x3_s2", "pool4/3x3_s2"])
    for spec in INCEPTIONS:
        if spec is None:
            x = n.pool(next(pools), x, "MAX", 3, 2)
            continue
        name, *widths = spec
        x = _inception(n, name, x, *[max(4, w // width) for w in widths])
    x = n.pool("pool5/7x7_s1", x, "AVE", n.shapes[x][2], 1)
    n.dropout("pool5/drop_7x7_s1", x)
    x = n.ip("loss3/classifier", x, 1000 // width)
    return n, n.softmax("prob", x)


def _bn_scale(n: Net, conv: str, suffix: str) -> None:
    n.batchnorm(f"bn{suffix}", conv)
    n.scale(f"scale{suffix}", conv)


def _bottleneck(n: Net, x: str, stage: str, width: int, stride: int, project: bool) -> str:
    """One ResNet-50 bottleneck as in the published deploy file: conv → BatchNorm → Scale (in place)."""
    if project:
        short = n.conv(f"res{stage}_branch1", x, 4 * width, 1, stride=stride, bias=False)
        _bn_scale(n, short, f"{stage}_branch1")
    else:
        short = x
    a = n.conv(f"res{stage}_branch2a", x, width, 1, stride=stride, bias=False)
    _bn_scale(n, a, f"{stage}_branch2a")
    n.relu(f"res{stage}_branch2a_relu", a)
    b = n.conv(f"res{stage}_branch2b", a, width, 3, pad=1, bias=False)
    _bn_scale(n, b, f"{stage}_branch2b")
    n.relu(f"res{stage}_branch2b_relu", b)
    c = n.conv(f"res{stage}_branch2c", b, 4 * width, 1, bias=False)
    _bn_scale(n, c, f"{stage}_branch2c")
    out = n.eltwise(f"res{stage}", [short, c], "SUM")
    n.relu(f"res{stage}_relu", out)
    return out


def resnet50(seed: int = 4, width: int = 4) -> tuple[Net, str]:
    """ResNet-50 (the original deploy prototxt's layout) at a 64x64 input."""
    n = Net("ResNet-50", (1, 3, 64, 64), seed)
    x = n.conv("conv1", "data", 64 // width, 7, stride=2, pad=3, bias=True)
    _bn_scale(n, x, "_conv1")
    n.relu("conv1_relu", x)
    x = n.pool("pool1", x, "MAX", 3, 2)
    for stage, blocks, planes, stride in (("2", 3, 64, 1), ("3", 4, 128, 2), ("4", 6, 256, 2), ("5", 3, 512, 2)):
        for i in range(blocks):
            x = _bottleneck(n, x, f"{stage}{chr(ord('a') + i)}", planes // width, stride if i == 0 else 1, i == 0)
    x = n.pool("pool5", x, "AVE", n.shapes[x][2], 1)
    x = n.ip("fc1000", x, 1000 // width)
    return n, n.softmax("prob", x)

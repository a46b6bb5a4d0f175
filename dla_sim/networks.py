"""ResNet-50, AlexNet and GoogLeNet as lists of DLA hardware operations, built in code.

Layer lists follow the NVDLA performance spreadsheet [PERF] (Caffe variants), so that spreadsheet
mode can be checked against its published results.  The spreadsheet's per-layer assumptions kept:

* ResNet-50 is the Caffe model: the stride-2 of a stage sits on the 1x1 ``branch2a`` / ``branch1``;
  the final 7x7 average pooling is fused into ``res5c_branch2c``; FC at batch 1.
* AlexNet (Caffe, 227x227 input so that conv1 gives 55x55), grouped conv2/4/5 (2 groups), max-pools
  fused into conv1/2/5, LRN not modelled (absent from the sheet); FC layers at the sheet's FC batch
  (16): they are ops of batch 16, costed per image by the simulator (cycles / N).
* GoogLeNet: the three 1x1 convolutions of an inception module that share its input run as one
  merged convolution ("1x1 combined"); the 3x3/s1 max-pool before ``pool proj`` and the max-pools
  between stages are fused (free), the 3b/4e max-pools and the final 7x7 average pool are fused into
  their ``pool proj`` rows, exactly as the sheet costs them.

With the hardware modes, a multi-batch first layer (C <= 4) becomes one image-mode layer per image
(image input excludes multi-batch [PG]); such per-image ops read ``data.i<k>`` and are meant for
timing (a functional run feeds those inputs separately).

Every convolution is followed by a fused (on-the-fly) SDP doing bias + ReLU (+ eltwise) and, where the
sheet fuses pooling, an on-the-fly PDP.  Mode choice: ``image`` for the 3-channel first layer on the
hardware model, ``winograd`` for 3x3/stride-1 layers where the hardware allows it (batch 1, output
W,H divisible by 4 and >= 8), else ``direct``.  The spreadsheet timing model applies its own rule
(every 3x3 divides MAC cycles by 2.25); with ``hw_modes=False`` the op's mode records where the sheet
stores Winograd-transformed weights (x16/9): every 3x3/s1 layer of ResNet-50 and AlexNet, only conv2
and inception 3a's 3x3 in GoogLeNet (the sheet's own inconsistency, reproduced), whether or not the
hardware could run them in Winograd mode -- spreadsheet-mode op lists are not checked against limits.

Known difference: the sheet's ResNet-50 row res2a_branch2a reads a 256-channel input; the real network
(and this builder) feeds it the 64-channel pool1 output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops import ConvOp, CubeDesc, HwOp, PdpOp, Precision, Requant, SdpOp


@dataclass
class Network:
    name: str
    ops: list[HwOp]
    inputs: dict[str, CubeDesc]
    outputs: list[str]
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor name -> shape
    biases: dict[str, int] = field(default_factory=dict)  # tensor name -> length
    batch: int = 1  # images per run; ops of a larger batch (the sheet's FC batch) are amortised

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops if isinstance(op, ConvOp))


class _Builder:
    def __init__(self, name: str, batch: int, precision: Precision, hw_modes: bool,
                 sheet_winograd: frozenset[str] | None = None) -> None:
        self.net = Network(name, [], {}, [], batch=batch)
        self.n = batch
        self.p = precision
        self.hw_modes = hw_modes
        self.sheet_winograd = sheet_winograd  # None: every 3x3/s1 layer

    def input(self, name: str, c: int, h: int, w: int) -> CubeDesc:
        cube = CubeDesc(n=self.n, c=c, h=h, w=w, precision=self.p, name=name)
        self.net.inputs[name] = cube
        return cube

    def _mode(self, name: str, x: CubeDesc, r: int, s: int, stride: tuple[int, int], ho: int, wo: int,
              groups: int) -> str:
        if not self.hw_modes:  # the sheet's per-layer choice of Winograd-transformed weights
            chosen = self.sheet_winograd is None or name in self.sheet_winograd
            return "winograd" if (r, s) == (3, 3) and stride == (1, 1) and chosen else "direct"
        if x.c <= 4 and x.n == 1:
            return "image"
        if ((r, s) == (3, 3) and stride == (1, 1) and groups == 1 and x.n == 1
                and ho % 4 == 0 and wo % 4 == 0 and ho >= 8 and wo >= 8):
            return "winograd"
        return "direct"

    def conv(
        self, name: str, x: CubeDesc, k: int, r: int, s: int | None = None, stride: int = 1, pad: int = 0,
        groups: int = 1, relu: bool = True, eltwise: CubeDesc | None = None,
        pool: tuple[str, int, int, tuple[int, int, int, int]] | None = None, batch: int | None = None,
    ) -> CubeDesc:
        s = r if s is None else s
        if batch is not None and batch != x.n:
            x = x.with_(n=batch)
        if self.hw_modes and x.c <= 4 and x.n > 1:
            # image input mode excludes multi-batch [PG]: one image-mode layer per image
            outs = [self.conv(f"{name}.i{i}", x.with_(n=1, name=f"{x.name}.i{i}"), k, r, s, stride, pad, groups,
                              relu, None, pool) for i in range(x.n)]
            return outs[0].with_(n=x.n, name=name)
        ho = (x.h + 2 * pad - r) // stride + 1
        wo = (x.w + 2 * pad - s) // stride + 1
        y = CubeDesc(n=x.n, c=k, h=ho, w=wo, precision=self.p, name=name)
        mode = self._mode(name, x, r, s, (stride, stride), ho, wo, groups)
        conv = ConvOp(
            name=name, input=x, output=y, kernel=(r, s), stride=(stride, stride), pad=(pad,) * 4,
            groups=groups, mode=mode, has_bias=False, inputs=(x.name, f"{name}.w"), outputs=(f"{name}.acc",),
        )
        self.net.weights[f"{name}.w"] = conv.weight_shape if mode != "winograd" else (k, x.c, 4, 4)
        self.net.biases[f"{name}.b"] = k
        operands = [f"{name}.b"] + ([eltwise.name] if eltwise is not None else [])
        sdp_out = y if pool is None else y.with_(name=f"{name}.sdp")
        sdp = SdpOp(
            name=f"{name}.sdp", input=y, output=sdp_out, source="flying", bias="per_channel",
            activation="relu" if relu else "none", eltwise="add" if eltwise is not None else None,
            eltwise_input=eltwise, inputs=(f"{name}.acc", *operands), outputs=(sdp_out.name,),
        )
        self.net.ops += [conv, sdp]
        if pool is None:
            return y
        mode_p, kp, sp, padp = pool
        hp = (y.h + padp[0] + padp[2] - kp) // sp + 1
        wp = (y.w + padp[1] + padp[3] - kp) // sp + 1
        z = CubeDesc(n=y.n, c=k, h=hp, w=wp, precision=self.p, name=name)
        self.net.ops.append(PdpOp(
            name=f"{name}.pool", input=sdp_out, output=z, mode=mode_p, kernel=(kp, kp), stride=(sp, sp),
            pad=padp, source="flying", inputs=(sdp_out.name,), outputs=(name,),
        ))
        return z


_CEIL_POOL = ("max", 3, 2, (0, 0, 1, 1))  # Caffe ceil-mode 3x3/2 pooling as an extra bottom/right pad


def resnet50(batch: int = 1, precision: Precision = Precision.INT8, hw_modes: bool = True) -> Network:
    b = _Builder("resnet50", batch, precision, hw_modes)
    x = b.input("data", 3, 224, 224)
    x = b.conv("conv1", x, 64, 7, stride=2, pad=3, pool=_CEIL_POOL)
    stages = [("2", 64, 3, 1), ("3", 128, 4, 2), ("4", 256, 6, 2), ("5", 512, 3, 2)]
    for st, planes, blocks, stride in stages:
        for i in range(blocks):
            tag = f"res{st}{'abcdef'[i]}"
            s = stride if i == 0 else 1
            short = b.conv(f"{tag}_branch1", x, planes * 4, 1, stride=s, relu=False) if i == 0 else x
            y = b.conv(f"{tag}_branch2a", x, planes, 1, stride=s)
            y = b.conv(f"{tag}_branch2b", y, planes, 3, pad=1)
            last = st == "5" and i == blocks - 1
            x = b.conv(f"{tag}_branch2c", y, planes * 4, 1, eltwise=short,
                       pool=("avg", 7, 1, (0, 0, 0, 0)) if last else None)
    b.conv("fc1000", x, 1000, 1, relu=False)
    b.net.outputs = ["fc1000"]
    return b.net


def alexnet(batch: int = 1, precision: Precision = Precision.INT8, hw_modes: bool = True,
            fc_batch: int = 16) -> Network:
    b = _Builder("alexnet", batch, precision, hw_modes)
    x = b.input("data", 3, 227, 227)
    pool = ("max", 3, 2, (0, 0, 0, 0))
    x = b.conv("conv1", x, 96, 11, stride=4, pool=pool)
    x = b.conv("conv2", x, 256, 5, pad=2, groups=2, pool=pool)
    x = b.conv("conv3", x, 384, 3, pad=1)
    x = b.conv("conv4", x, 384, 3, pad=1, groups=2)
    x = b.conv("conv5", x, 256, 3, pad=1, groups=2, pool=pool)
    fb = max(batch, fc_batch)
    x = b.conv("fc6", x, 4096, 6, batch=fb)
    x = b.conv("fc7", x, 4096, 1, batch=fb)
    b.conv("fc8", x, 1000, 1, relu=False, batch=fb)
    b.net.outputs = ["fc8"]
    return b.net


# (name, C_in, H, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj, pool fused into pool proj)
_INCEPTION = [
    ("3a", 192, 28, 64, 96, 128, 16, 32, 32, None),
    ("3b", 256, 28, 128, 128, 192, 32, 96, 64, _CEIL_POOL),
    ("4a", 480, 14, 192, 96, 208, 16, 48, 64, None),
    ("4b", 512, 14, 160, 112, 224, 24, 64, 64, None),
    ("4c", 512, 14, 128, 128, 256, 24, 64, 64, None),
    ("4d", 512, 14, 112, 144, 288, 32, 64, 64, None),
    ("4e", 528, 14, 256, 160, 320, 32, 128, 128, _CEIL_POOL),
    ("5a", 832, 7, 256, 160, 320, 32, 128, 128, None),
    ("5b", 832, 7, 384, 192, 384, 48, 128, 128, ("avg", 7, 1, (0, 0, 0, 0))),
]


# The sheet stores Winograd-transformed (16/9 larger) weights only for these GoogLeNet layers; its
# later 3x3 rows use plain weights (while still dividing MAC cycles by 2.25).  Reproduced as is.
_GOOGLENET_SHEET_WINOGRAD = frozenset({"conv2", "inception_3a_3x3"})


def googlenet(batch: int = 1, precision: Precision = Precision.INT8, hw_modes: bool = True) -> Network:
    b = _Builder("googlenet", batch, precision, hw_modes, _GOOGLENET_SHEET_WINOGRAD)
    x = b.input("data", 3, 224, 224)
    x = b.conv("conv1", x, 64, 7, stride=2, pad=3, pool=_CEIL_POOL)
    b.conv("conv2", x, 192, 3, pad=1, pool=_CEIL_POOL)
    for tag, cin, h, c1, c3r, c3, c5r, c5, pp, pool in _INCEPTION:
        mod_in = CubeDesc(n=batch, c=cin, h=h, w=h, precision=precision, name=f"inception_{tag}.in")
        merged = b.conv(f"inception_{tag}_1x1_combined", mod_in, c1 + c3r + c5r, 1)
        b.conv(f"inception_{tag}_3x3", merged.with_(c=c3r), c3, 3, pad=1)
        b.conv(f"inception_{tag}_5x5", merged.with_(c=c5r), c5, 5, pad=2)
        out = b.conv(f"inception_{tag}_pool_proj", mod_in, pp, 1, pool=pool)
    fc_in = out.with_(c=1024, h=1, w=1, name="pool5")
    b.conv("loss3_classifier", fc_in, 1000, 1, relu=False)
    b.net.outputs = ["loss3_classifier"]
    return b.net


NETWORKS = {"resnet50": resnet50, "alexnet": alexnet, "googlenet": googlenet}


def random_parameters(net: Network, seed: int = 0) -> tuple[dict[str, np.ndarray], list[HwOp]]:
    """Seeded INT8 weights, int16 biases and per-channel requant for a functional run.

    Requant scales are chosen from the weight statistics so outputs use the int8 range without
    saturating flat (so that tests exercise real values).  Returns (tensors, ops with requant set).
    """
    from dataclasses import replace

    from .conv_core import winograd_weights

    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    ops: list[HwOp] = []
    for op in net.ops:
        if isinstance(op, ConvOp):
            k, cg, r, s = op.weight_shape
            lim = 12 if op.mode == "winograd" else 127
            g = rng.integers(-lim, lim + 1, size=(k, cg, r, s)).astype(np.int8)
            tensors[f"{op.name}.w"] = winograd_weights(g, Precision.INT8) if op.mode == "winograd" else g
            tensors[f"{op.name}.b"] = rng.integers(-2000, 2000, size=k).astype(np.int16)
            std = np.sqrt(cg * r * s) * lim / np.sqrt(3) * 40.0 * (4 if op.mode == "winograd" else 1)
            shift = 16
            scale = max(1, int(round(40.0 * 1.5 * (1 << shift) / std)))  # ReLU halves the power
            rq = Requant(scale=(scale,), shift=(shift,))
            ops.append(op)
            last_conv = rq
        elif isinstance(op, SdpOp):
            ops.append(replace(op, out_requant=last_conv))
        else:
            ops.append(op)
    return tensors, ops

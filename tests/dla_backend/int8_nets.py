"""INT8 test networks for the DLA backend: random small nets, calibrated the builder's way, and the
comparison of a DLA partition against the reference backend on the same tensors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from backends.dla import DlaBackend, supports
from backends.reference.executor import execute
from engine.builder import BuilderConfig
from engine.ir.dtypes import Precision
from engine.ir.layers import (
    SHAPE_ONLY,
    ActivationSpec,
    ActivationType,
    ConcatenationParams,
    FullyConnectedParams,
    LayerKind,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
)
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.optimizer import optimize
from engine.quantization import builder_step, make_calibrator

from .nets import conv

INT8 = Precision.INT8
QUIET = Logger(Severity.ERROR)
ScaleEdit = Callable[[Network, dict], None]


def calibrated(net: Network, seed: int, n_batches: int = 3, algorithm: str = "minmax",
               edit: ScaleEdit | None = None, dla: bool = False,
               pins: dict[str, Precision] | None = None) -> Network:
    """``net`` optimized, calibrated on seeded random batches and assigned INT8 (FP16 elsewhere), as
    the builder does with ``fp16`` and ``int8``; ``edit`` may change the scale table first. ``dla``:
    a build whose layers default to the DLA; ``pins``: the builder's ``layer_precisions``."""
    rng = np.random.default_rng(seed)
    data = [{n: rng.standard_normal(net.tensors[n].shape).astype(np.float32) for n in net.inputs}
            for _ in range(n_batches)]
    cfg = BuilderConfig(fp16=True, int8=True, calibrator=make_calibrator(algorithm, data),
                        default_device="dla" if dla else "gpu", layer_precisions=dict(pins or {}))
    builder_step.prepare(net, cfg, QUIET)
    opt = optimize(net).network
    table = builder_step.scales_for(opt, cfg, None, QUIET)
    if edit is not None:
        edit(opt, table.scales)
    for layer in opt.layers:
        if layer.kind not in SHAPE_ONLY:
            layer.precision = Precision.FP16
    builder_step.assign(opt, cfg, table, QUIET)
    return opt


def share_concat_scales(net: Network, scales: dict) -> None:
    """One scale for every concatenation's inputs and output (TensorRT's DLA rule for INT8 concat)."""
    for layer in net.layers:
        if layer.kind is LayerKind.CONCATENATION:
            s = max(scales[t] for t in (*layer.inputs, *layer.outputs))
            for t in (*layer.inputs, *layer.outputs):
                scales[t] = s


def reference_values(net: Network, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor the reference backend computes (the layers' own precisions)."""
    vals = dict(feeds)

    def keep(layer, outs):
        vals.update(zip(layer.outputs, outs))

    execute(net, feeds, observer=keep)
    return vals


def dla_vs_reference(net: Network, cfg, seed: int, layers: list[str] | None = None):
    """(partition, DLA outputs, reference values) for the DLA-supported layers of ``net`` (or
    ``layers``) on fresh seeded inputs; the DLA reads its boundary inputs from the reference."""
    rng = np.random.default_rng(seed)
    feeds = {n: (rng.standard_normal(net.tensors[n].shape) * 1.5).astype(np.float32) for n in net.inputs}
    ref = reference_values(net, feeds)
    names = layers or [la.name for la in net.layers if supports(la, net, INT8, cfg).ok]
    be = DlaBackend(cfg, 0)
    part = be.compile(net, names, INT8)
    out, _ = be.execute(part, {b.name: ref[b.name] for b in part.inputs})
    return part, out, ref


# ------------------------------------------------------------------------------------ networks


def _bn(net: Network, x, rng, name: str):
    c = net.tensors[x.name].shape[1]
    p = ScaleParams(ScaleMode.CHANNEL)
    w = {"scale": (1 + 0.3 * rng.standard_normal(c)).astype(np.float32),
         "shift": (0.2 * rng.standard_normal(c)).astype(np.float32)}
    return net.tensor(net.add_layer(p, [x], w, name=name).outputs[0])


def net_conv_bn_relu_pools(rng) -> Network:
    """conv+BN+ReLU, max pool, conv+ReLU, average pool; the network output is the pool's (int8)."""
    net = Network("conv_bn_relu_pools")
    x = net.add_input("x", (2, 8, 12, 12))
    y = conv(net, x, 32, 3, rng, pad=1, name="c1")
    y = net.add_activation(_bn(net, y, rng, "bn1"), "relu", name="r1")
    y = net.add_pooling(y, "max", (2, 2), name="p1")
    y = conv(net, y, 24, 3, rng, pad=1, act="relu", name="c2")
    y = net.add_pooling(y, "average", (2, 2), name="p2")
    net.mark_output(y)
    return net


def net_residual(rng) -> Network:
    """A ResNet basic block pair: conv+BN+ReLU, conv+BN, add the block input, ReLU; then a pool."""
    net = Network("residual")
    x = net.add_input("x", (1, 32, 8, 8))
    h = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c0")
    for i in range(2):
        y = conv(net, h, 32, 3, rng, pad=1, name=f"a{i}")
        y = net.add_activation(_bn(net, y, rng, f"bna{i}"), "relu", name=f"ra{i}")
        y = _bn(net, conv(net, y, 32, 3, rng, pad=1, name=f"b{i}"), rng, f"bnb{i}")
        h = net.add_activation(net.add_elementwise(y, h, "sum", name=f"add{i}"), "relu", name=f"out{i}")
    net.mark_output(net.add_pooling(h, "max", (2, 2), name="pool"))
    return net


def net_concat(rng) -> Network:
    """Two branches of 32 channels concatenated on C, then a conv and a pool."""
    net = Network("concat")
    x = net.add_input("x", (1, 16, 8, 8))
    a = conv(net, x, 32, 1, rng, act="relu", name="ba")
    b = conv(net, x, 32, 3, rng, pad=1, act="relu", name="bb")
    c = net.tensor(net.add_layer(ConcatenationParams(axis=1), [a, b], name="cat").outputs[0])
    y = conv(net, c, 32, 3, rng, pad=1, act="relu", name="c3")
    net.mark_output(net.add_pooling(y, "max", (2, 2), name="pool"))
    return net


def net_fc(rng) -> Network:
    """conv, global average pool, flatten, FC+ReLU, FC (logits: a float output, left to the GPU)."""
    net = Network("fc")
    x = net.add_input("x", (4, 8, 6, 6))
    y = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c1")
    y = net.add_pooling(y, "average", (6, 6), name="gap")
    y = net.tensor(net.add_layer(ShuffleParams(reshape=(4, 32)), [y], name="flat").outputs[0])
    for i, k in enumerate((48, 10)):
        c = net.tensors[y.name].shape[1]
        w = {"kernel": (rng.standard_normal((k, c)) / np.sqrt(c)).astype(np.float32),
             "bias": rng.standard_normal(k).astype(np.float32)}
        act = ActivationSpec(ActivationType.RELU) if i == 0 else None
        y = net.tensor(net.add_layer(FullyConnectedParams(num_outputs=k, activation=act), [y], w,
                                     name=f"fc{i}").outputs[0])
    net.mark_output(y)
    return net


def net_conv_silu(rng, exported: bool = True, act: str = "silu", residual: bool = False) -> Network:
    """Convolutions with a SiLU (or hard-swish) epilogue: written as an exporter does (Sigmoid + Mul on
    the conv output, which the optimizer fuses) or already fused; a pool makes the output int8."""
    net = Network(f"conv_{act}")
    x = net.add_input("x", (1, 16, 12, 12))
    h = conv(net, x, 32, 3, rng, pad=1, act="relu", name="c0")
    for i in range(2):
        if exported and act == "silu":
            y = conv(net, h, 32, 3, rng, pad=1, name=f"c{i + 1}")
            s = net.add_activation(y, "sigmoid", name=f"sig{i + 1}")
            y = net.add_elementwise(y, s, "prod", name=f"mul{i + 1}")
        else:
            y = conv(net, h, 32, 3, rng, pad=1, act=act, name=f"c{i + 1}",
                     residual=h if residual and i == 1 else None)
        h = y
    net.mark_output(net.add_pooling(h, "max", (2, 2), name="pool"))
    return net

"""Seeded random networks for the optimizer's equivalence tests.

Networks are built with the Network API from blocks that carry the patterns the passes look
for (conv + BatchNorm-as-Scale + activation, residual blocks, Inception-style branches joined by
a concat, sibling 1x1 convolutions, pointwise chains with constants, shuffle pairs, identities,
constant sub-graphs, dead branches) and some that must block them (extra readers, network
outputs in the middle, padded convs after a shifted Scale). Weights are random and bounded away
from zero, so no rewrite can pass by multiplying by zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.ir.layers import (
    ActivationType,
    CastParams,
    ConcatenationParams,
    ConvolutionParams,
    DeconvolutionParams,
    ElementWiseOp,
    FullyConnectedParams,
    IdentityParams,
    LayerKind,
    MatrixMultiplyParams,
    PoolingType,
    ReduceOp,
    ReduceParams,
    ScaleMode,
    ScaleParams,
    ShuffleParams,
    UnaryOp,
    UnaryParams,
)
from engine.ir.network import Network, Tensor

SAFE_ACTIVATIONS = (
    (ActivationType.RELU, 0.0, 0.0), (ActivationType.LEAKY_RELU, 0.1, 0.0), (ActivationType.CLIP, -1.0, 1.5),
    (ActivationType.SIGMOID, 0.0, 0.0), (ActivationType.TANH, 0.0, 0.0), (ActivationType.SILU, 0.0, 0.0),
    (ActivationType.ELU, 1.0, 0.0), (ActivationType.GELU_ERF, 0.0, 0.0), (ActivationType.SOFTPLUS, 0.0, 0.0),
)


def nonzero(rng: np.random.Generator, shape: tuple[int, ...], low: float = 0.5, high: float = 1.5) -> np.ndarray:
    """Random float32 values with |v| in [low, high] and random signs."""
    mag = rng.uniform(low, high, size=shape)
    return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def positive(rng: np.random.Generator, shape: tuple[int, ...], low: float = 0.5, high: float = 1.5) -> np.ndarray:
    return rng.uniform(low, high, size=shape).astype(np.float32)


class Gen:
    """A network under construction plus the generator that decides its shape."""

    def __init__(self, seed: int, channels: int = 4, size: int = 6) -> None:
        self.rng = np.random.default_rng(seed)
        self.net = Network(f"random_{seed}")
        self.x = self.net.add_input("x", (1, channels, size, size))

    # ------------------------------------------------------------------ primitives

    def channels(self, t: Tensor | str) -> int:
        return self.net.tensor(t if isinstance(t, str) else t.name).shape[1]

    def conv(self, x: Tensor, k: int = 3, out: int | None = None, bias: bool = True, stride: int = 1,
             pad: int | None = None, groups: int = 1) -> Tensor:
        c = self.channels(x)
        out = out or int(self.rng.integers(3, 7)) // groups * groups or groups
        fan_in = c // groups * k * k
        kernel = nonzero(self.rng, (out, c // groups, k, k)) / np.float32(fan_in)
        b = nonzero(self.rng, (out,), 0.1, 0.5) if bias else None
        pad = k // 2 if pad is None else pad
        return self.net.add_convolution(x, kernel, b, stride=(stride, stride), padding=(pad, pad), groups=groups)

    def scale(self, x: Tensor, mode: ScaleMode = ScaleMode.CHANNEL, shift: bool = True, axis: int = 1,
              power: bool = False) -> Tensor:
        info = self.net.tensor(x.name).info
        params = ScaleParams(mode, channel_axis=axis)
        shape = params.coefficient_shape(info)
        weights = {"scale": nonzero(self.rng, shape)}
        if shift:
            weights["shift"] = nonzero(self.rng, shape, 0.1, 0.5)
        if power:
            weights["power"] = self.rng.choice([1.0, 2.0], size=shape).astype(np.float32)
        layer = self.net.add_layer(params, [x], weights, origin=["BatchNormalization"])
        return self.net.tensor(layer.outputs[0])

    def act(self, x: Tensor, pick: int | None = None) -> Tensor:
        i = int(self.rng.integers(len(SAFE_ACTIVATIONS))) if pick is None else pick
        t, a, b = SAFE_ACTIVATIONS[i]
        return self.net.add_activation(x, t, a, b)

    def relu(self, x: Tensor) -> Tensor:
        return self.act(x, 0)

    def const(self, value: np.ndarray) -> Tensor:
        return self.net.add_constant(value)

    def layer(self, params, inputs, weights=None, origin=()) -> Tensor:
        return self.net.tensor(self.net.add_layer(params, inputs, weights, origin=origin).outputs[0])

    # ------------------------------------------------------------------ blocks

    def conv_bn_act(self, x: Tensor) -> Tensor:
        k = int(self.rng.choice([1, 3]))
        y = self.conv(x, k, bias=bool(self.rng.integers(2)))
        return self.act(self.scale(y))

    def residual(self, x: Tensor) -> Tensor:
        c = self.channels(x)
        y = self.relu(self.scale(self.conv(x, 3)))
        y = self.scale(self.conv(y, 3, out=c))
        short = x if self.rng.integers(2) else self.scale(self.conv(x, 1, out=c))
        return self.relu(self.net.add_elementwise(y, short, ElementWiseOp.SUM))

    def residual_plain(self, x: Tensor) -> Tensor:
        """A residual block without BatchNorm: conv -> add -> activation, ready for ConvEltwiseSumFusion."""
        c = self.channels(x)
        y = self.conv(self.relu(self.conv(x, 3)), 3, out=c)
        y = self.net.add_elementwise(x, y, ElementWiseOp.SUM) if self.rng.integers(2) else \
            self.net.add_elementwise(y, x, ElementWiseOp.SUM)
        return self.act(y) if self.rng.integers(3) else y

    def inception(self, x: Tensor) -> Tensor:
        b1 = self.relu(self.conv(x, 1))
        b2 = self.relu(self.conv(self.relu(self.conv(x, 1)), 3))
        b3 = self.relu(self.conv(self.net.add_pooling(x, PoolingType.MAX, (3, 3), (1, 1), (1, 1)), 1))
        b4 = self.conv(x, 1)
        return self.layer(ConcatenationParams(axis=1), [b1, b2, b3, b4])

    def siblings(self, x: Tensor) -> Tensor:
        """Two or three 1x1 convolutions reading ``x`` whose outputs go different ways."""
        n = int(self.rng.integers(2, 4))
        c = int(self.rng.integers(3, 6))
        branches = []
        activation = bool(self.rng.integers(2))
        for i in range(n):
            y = self.conv(x, 1, out=c, bias=bool(self.rng.integers(2)))
            if activation:
                y = self.relu(y)
            branches.append(self.conv(y, 3, out=c) if i % 2 else self.net.add_activation(y, ActivationType.TANH))
        out = branches[0]
        for b in branches[1:]:
            out = self.net.add_elementwise(out, b, ElementWiseOp.SUM)
        return out

    def pointwise(self, x: Tensor) -> Tensor:
        c = self.channels(x)
        y = self.net.add_activation(x, ActivationType.SIGMOID)
        y = self.net.add_elementwise(y, self.const(nonzero(self.rng, (1, c, 1, 1))), ElementWiseOp.PROD)
        y = self.net.add_elementwise(self.const(nonzero(self.rng, (1,), 0.1, 0.5)), y, ElementWiseOp.SUM)
        y = self.scale(y, ScaleMode.UNIFORM, power=bool(self.rng.integers(2)))
        y = self.layer(UnaryParams(UnaryOp.ABS), [y])
        y = self.layer(UnaryParams(UnaryOp.SQRT), [y]) if self.rng.integers(2) else y
        y = self.net.add_elementwise(y, x, ElementWiseOp.PROD)  # a second reader of x
        y = self.net.add_elementwise(self.const(positive(self.rng, (1, c, 1, 1))), y, ElementWiseOp.DIV)
        return self.net.add_activation(y, ActivationType.TANH)

    def shuffles(self, x: Tensor, choice: int | None = None) -> Tensor:
        n, c, h, w = self.net.tensor(x.name).shape
        choice = int(self.rng.integers(4)) if choice is None else choice
        if choice == 0:  # NCHW -> NHWC -> NCHW
            y = self.layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [x])
            return self.layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y])
        if choice == 1:  # flatten spatial, then restore
            y = self.layer(ShuffleParams(reshape=(n, c, h * w)), [x])
            y = self.layer(ShuffleParams(reshape=(n, c, h, w)), [y])
            return self.relu(y)
        if choice == 2:  # transpose + reshape, then reshape + transpose back, with a channel shuffle inside
            y = self.layer(ShuffleParams(first_perm=(0, 2, 3, 1), reshape=(n, h * w, c)), [x])
            y = self.layer(ShuffleParams(reshape=(n, h, w, c), second_perm=(0, 3, 2, 1)), [y])
            return self.layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [y])
        y = self.layer(ShuffleParams(reshape=(n, c, h, w)), [x])  # identity reshape
        return self.layer(ShuffleParams(first_perm=(0, 1, 3, 2)), [y])

    def identities(self, x: Tensor) -> Tensor:
        y = self.layer(IdentityParams(), [x], origin=["Dropout"])
        y = self.layer(CastParams(x.dtype), [y])
        return self.relu(y)

    def scale_then_conv(self, x: Tensor, choice: int | None = None) -> Tensor:
        choice = int(self.rng.integers(3)) if choice is None else choice
        if choice == 0:  # shift, no padding: foldable
            return self.conv(self.scale(x), 1)
        if choice == 1:  # no shift, padding: foldable
            return self.conv(self.scale(x, shift=False), 3)
        return self.conv(self.scale(x), 3)  # shift and zero padding: not foldable, must stay

    def deconv_bn(self, x: Tensor) -> Tensor:
        c = self.channels(x)
        groups = int(self.rng.choice([1, c]))
        out = 2 * groups
        kernel = nonzero(self.rng, (c, out // groups, 2, 2)) / np.float32(c)
        params = DeconvolutionParams(num_output_maps=out, kernel=(2, 2), stride=(2, 2), pre_padding=(0, 0),
                                     post_padding=(0, 0), dilation=(1, 1), groups=groups)
        y = self.layer(params, [x], {"kernel": kernel})
        y = self.relu(self.scale(y))
        return self.net.add_pooling(y, PoolingType.AVERAGE, (2, 2))

    def constants(self, x: Tensor) -> Tensor:
        c = self.channels(x)
        a = self.const(positive(self.rng, (1, c, 1, 1)))
        b = self.const(nonzero(self.rng, (1, c, 1, 1)))
        s = self.net.add_elementwise(a, b, ElementWiseOp.SUM)
        s = self.scale(s, shift=True)
        s = self.layer(UnaryParams(UnaryOp.EXP), [s])
        return self.net.add_elementwise(x, s, ElementWiseOp.PROD)

    def dead_branch(self, x: Tensor) -> Tensor:
        self.relu(self.conv(x, 1))  # never read
        return x

    def side_output(self, x: Tensor) -> Tensor:
        """A network output in the middle: the conv under it must stay materialised."""
        y = self.conv(x, 1)
        self.net.mark_output(y)
        return self.relu(y)

    def channel_mlp(self, x: Tensor, late_scale: bool = False) -> Tensor:
        """A ConvNeXt-style block as exporters write it: NHWC permute, Linear (MatMul + bias Add),
        GELU as its five-layer erf formula, Linear, a layer-scale Mul, permute back, residual.
        ``late_scale``: the layer scale after the permute back, (C, 1, 1), as torchvision's has it."""
        import math

        c = self.channels(x)
        ew = self.net.add_elementwise
        y = self.layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [x])
        y = self.layer(FullyConnectedParams(num_outputs=2 * c), [y],
                       {"kernel": nonzero(self.rng, (2 * c, c)) / np.float32(c)})
        y = ew(y, self.const(nonzero(self.rng, (2 * c,))), ElementWiseOp.SUM)
        d = ew(y, self.const(np.array(math.sqrt(2.0), np.float32)), ElementWiseOp.DIV)
        e = self.layer(UnaryParams(UnaryOp.ERF), [d])
        t = ew(e, self.const(np.array(1.0, np.float32)), ElementWiseOp.SUM)
        y = ew(ew(y, t, ElementWiseOp.PROD), self.const(np.array(0.5, np.float32)), ElementWiseOp.PROD)
        y = self.layer(FullyConnectedParams(num_outputs=c), [y],
                       {"kernel": nonzero(self.rng, (c, 2 * c)) / np.float32(2 * c)})
        y = ew(y, self.const(nonzero(self.rng, (c,))), ElementWiseOp.SUM)
        if late_scale:
            y = self.layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y])
            y = ew(y, self.const(positive(self.rng, (c, 1, 1))), ElementWiseOp.PROD)
        else:
            y = ew(y, self.const(positive(self.rng, (c,))), ElementWiseOp.PROD)
            y = self.layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y])
        return ew(x, y, ElementWiseOp.SUM)

    def token_fc(self, x: Tensor) -> Tensor:
        """Fully connected layers between shuffles, as exported attention projections have them: a
        transpose that keeps the last axis before one (sunk below it), a shuffle of the leading
        axes after another whose input is a shuffle's (hoisted above it), a residual add."""
        n, c, h, w = self.net.tensor(x.name).shape
        y = self.relu(self.layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [x]))
        y = self.layer(ShuffleParams(first_perm=(1, 0, 2, 3)), [y])
        y = self.layer(FullyConnectedParams(num_outputs=2 * c), [y],
                       {"kernel": nonzero(self.rng, (2 * c, c)) / np.float32(c), "bias": nonzero(self.rng, (2 * c,))})
        y = self.layer(ShuffleParams(reshape=(h * n * w, 2 * c)), [y])
        y = self.layer(FullyConnectedParams(num_outputs=c), [y],
                       {"kernel": nonzero(self.rng, (c, 2 * c)) / np.float32(2 * c)})
        y = self.layer(ShuffleParams(reshape=(h, n, w, c), second_perm=(1, 0, 2, 3)), [y])
        y = self.layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y])
        return self.net.add_elementwise(x, y, ElementWiseOp.SUM)

    def video(self, x: Tensor) -> Tensor:
        """A video block: the 4-D tensor read as (N, C, T, H, W), a padded 3-D convolution, BN,
        ReLU and a residual add on rank 5, then back to rank 4."""
        n, c, h, w = self.net.tensor(x.name).shape
        t = 2 if h % 2 == 0 else 1
        v = self.layer(ShuffleParams(reshape=(n, c, t, h // t, w)), [x])
        kernel = nonzero(self.rng, (c, c, 2, 3, 3)) / np.float32(c * 18)
        y = self.layer(ConvolutionParams(c, (2, 3, 3), (1, 1, 1), (1, 1, 1), (0, 1, 1), (1, 1, 1)), [v],
                       {"kernel": kernel, "bias": nonzero(self.rng, (c,), 0.1, 0.5)})
        y = self.relu(self.scale(y))
        y = self.net.add_elementwise(v, y, ElementWiseOp.SUM)
        return self.layer(ShuffleParams(reshape=(n, c, h, w)), [y])

    def layer_norm(self, x: Tensor) -> Tensor:
        """LayerNorm over the channels as pre-opset-17 exporters write it (NHWC permute, mean, x - mean,
        Pow 2, mean, + eps, Sqrt, Div, * gamma, + beta, permute back), then a residual add."""
        c = self.channels(x)
        ew = self.net.add_elementwise
        y = self.layer(ShuffleParams(first_perm=(0, 2, 3, 1)), [x])
        mean = self.layer(ReduceParams(ReduceOp.MEAN, (3,), True), [y])
        d = ew(y, mean, ElementWiseOp.SUB)
        var = self.layer(ReduceParams(ReduceOp.MEAN, (-1,), True),
                         [ew(d, self.const(np.array(2.0, np.float32)), ElementWiseOp.POW)])
        sd = self.layer(UnaryParams(UnaryOp.SQRT), [ew(var, self.const(np.array(1e-5, np.float32)), ElementWiseOp.SUM)])
        y = ew(ew(ew(d, sd, ElementWiseOp.DIV), self.const(positive(self.rng, (c,))), ElementWiseOp.PROD),
               self.const(nonzero(self.rng, (c,))), ElementWiseOp.SUM)
        return ew(x, self.layer(ShuffleParams(first_perm=(0, 3, 1, 2)), [y]), ElementWiseOp.SUM)

    def head(self, x: Tensor) -> None:
        n, c, h, w = self.net.tensor(x.name).shape
        y = self.net.add_pooling(x, PoolingType.AVERAGE, (h, w))
        y = self.layer(ShuffleParams(reshape=(n, c)), [y])
        k = int(self.rng.integers(3, 6))
        y = self.layer(MatrixMultiplyParams(), [y, self.const(nonzero(self.rng, (c, k)) / np.float32(c))])
        y = self.relu(self.scale(y, axis=1))
        self.net.mark_output(y)


BLOCKS: dict[str, Callable[[Gen, Tensor], Tensor]] = {
    "conv_bn_act": Gen.conv_bn_act, "residual": Gen.residual, "residual_plain": Gen.residual_plain,
    "inception": Gen.inception, "siblings": Gen.siblings, "pointwise": Gen.pointwise, "shuffles": Gen.shuffles,
    "identities": Gen.identities, "scale_then_conv": Gen.scale_then_conv, "deconv_bn": Gen.deconv_bn,
    "constants": Gen.constants, "dead_branch": Gen.dead_branch, "side_output": Gen.side_output,
    "channel_mlp": Gen.channel_mlp, "video": Gen.video, "token_fc": Gen.token_fc,
    "channel_mlp_late_scale": lambda g, x: g.channel_mlp(x, late_scale=True), "layer_norm": Gen.layer_norm,
}
APPENDED = {"channel_mlp", "video", "token_fc", "channel_mlp_late_scale", "layer_norm"}  # appended by seed
SAMPLED = sorted(set(BLOCKS) - APPENDED)  # and samples these 13


def build(seed: int, blocks: list[str | Callable[[Gen, Tensor], Tensor]], head: bool = True) -> Network:
    """A network: input, the blocks (names or callables) in sequence, a classifier head."""
    g = Gen(seed)
    x = g.x
    for block in blocks:
        x = (BLOCKS[block] if isinstance(block, str) else block)(g, x)
        if g.channels(x) > 12:  # keep the tensors small: squeeze wide outputs with a 1x1 conv
            x = g.relu(g.conv(x, 1, out=6))
    if head:
        g.head(x)
    else:
        g.net.mark_output(x)
    g.net.validate()
    return g.net


def random_network(seed: int) -> Network:
    """A random DAG of 4-6 blocks; every seed mixes fusable and blocking patterns."""
    rng = np.random.default_rng(10_000 + seed)
    names = list(rng.choice(SAMPLED, size=int(rng.integers(4, 7)), replace=True))
    if not {"residual", "residual_plain", "inception"} & set(names):
        names.insert(int(rng.integers(len(names) + 1)), str(rng.choice(["residual", "inception"])))
    if seed % 3 == 0:  # a transformer-style MLP at the end (appended, so the other blocks stay as they were)
        names.append("channel_mlp")
    if seed % 4 == 1:  # a 3-D convolution block, appended likewise
        names.append("video")
    if seed % 5 == 2:  # fully connected layers between shuffles, appended likewise
        names.append("token_fc")
    if seed % 6 == 5:  # torchvision's ConvNeXt block (layer scale after the permute back), likewise
        names.append("channel_mlp_late_scale")
    if seed % 7 == 3:  # a LayerNorm as pre-opset-17 exports write it, likewise
        names.append("layer_norm")
    return build(seed, names)


def feeds(net: Network, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(net.tensors[n].shape).astype(net.tensors[n].dtype.numpy) for n in net.inputs}


def kind_counts(net: Network) -> dict[LayerKind, int]:
    out: dict[LayerKind, int] = {}
    for layer in net.layers:
        out[layer.kind] = out.get(layer.kind, 0) + 1
    return out


def convs_with(net: Network, activation: bool | None = None, residual: bool | None = None) -> int:
    n = 0
    for layer in net.layers:
        p = layer.params
        if not isinstance(p, ConvolutionParams):
            continue
        if activation is not None and (p.activation is not None) != activation:
            continue
        if residual is not None and p.residual != residual:
            continue
        n += 1
    return n


def assert_equivalent(before: Network, after: Network, seed: int = 0, rtol: float = 1e-5) -> None:
    """Same I/O signature and outputs equal within ``rtol`` (atol 1e-6 of each output's magnitude)."""
    from backends.reference import execute

    assert after.inputs == before.inputs and after.outputs == before.outputs
    for name in before.inputs + before.outputs:
        assert after.tensors[name].info == before.tensors[name].info, name
    f = feeds(before, seed)
    ref, out = execute(before, f), execute(after, f)
    assert set(out) == set(ref)
    for name, r in ref.items():
        assert out[name].shape == r.shape and out[name].dtype == r.dtype, name
        assert np.all(np.isfinite(r)), f"reference output {name} is not finite: the generator must avoid that"
        atol = 1e-6 * float(np.abs(r).max())
        np.testing.assert_allclose(out[name], r, rtol=rtol, atol=atol, err_msg=f"output {name}")

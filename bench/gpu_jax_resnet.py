"""ResNet-50 in plain JAX (lax convolutions, no flax), the JAX jit peer of bench/gpu_peers.py.

It takes the weights of a torchvision ResNet-50 (``state_dict`` as numpy), folds each batch norm
into its convolution in fp32 (as hetrt's builder does) and runs NHWC with HWIO weights in the
requested dtype, so that XLA's own layout choice and fusion are what is measured against hetrt.
torchvision's ResNet-50 is v1.5: the stride of a bottleneck sits on its 3x3 convolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCKS = {"layer1": (3, 1), "layer2": (4, 2), "layer3": (6, 2), "layer4": (3, 2)}


def _fold(sd: dict[str, np.ndarray], conv: str, bn: str, dtype) -> tuple[Any, Any]:
    """(HWIO weight, bias) of conv ``conv`` with batch norm ``bn`` folded in, in ``dtype``."""
    import jax.numpy as jnp

    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + 1e-5)
    w = sd[f"{conv}.weight"] * scale[:, None, None, None]
    b = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return jnp.asarray(w.transpose(2, 3, 1, 0), dtype), jnp.asarray(b, dtype)


def params_from_torch(sd: dict[str, np.ndarray], dtype="float16") -> dict[str, Any]:
    """The pytree of folded weights: {"stem", blocks "layerL.i" -> {conv1..3, down?}, "fc"}."""
    import jax.numpy as jnp

    p: dict[str, Any] = {"stem": _fold(sd, "conv1", "bn1", dtype)}
    for layer, (n, _) in BLOCKS.items():
        for i in range(n):
            pre = f"{layer}.{i}"
            blk = {f"conv{j}": _fold(sd, f"{pre}.conv{j}", f"{pre}.bn{j}", dtype) for j in (1, 2, 3)}
            if f"{pre}.downsample.0.weight" in sd:
                blk["down"] = _fold(sd, f"{pre}.downsample.0", f"{pre}.downsample.1", dtype)
            p[pre] = blk
    p["fc"] = (jnp.asarray(sd["fc.weight"].T, dtype), jnp.asarray(sd["fc.bias"], dtype))
    return p


def _conv(x, wb, stride: int = 1, pad: int = 0, relu: bool = True):
    from jax import lax, nn

    w, b = wb
    y = lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                 dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    return nn.relu(y) if relu else y


def forward(p: dict[str, Any], x):
    """Logits of an NHWC batch ``x`` (already in the weights' dtype)."""
    import jax.numpy as jnp
    from jax import lax, nn

    x = _conv(x, p["stem"], 2, 3)
    x = lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                          ((0, 0), (1, 1), (1, 1), (0, 0)))
    for layer, (n, stride) in BLOCKS.items():
        for i in range(n):
            blk = p[f"{layer}.{i}"]
            s = stride if i == 0 else 1
            y = _conv(x, blk["conv1"])
            y = _conv(y, blk["conv2"], s, 1)
            y = _conv(y, blk["conv3"], relu=False)
            sc = _conv(x, blk["down"], s, relu=False) if "down" in blk else x
            x = nn.relu(y + sc)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)
    w, b = p["fc"]
    return x @ w + b

"""INT8 against FP16, layer by layer: the kernels of single MobileNetV2 / EfficientNet-B0 /
ResNet-50 layer shapes at one batch, every candidate tactic timed as the builder times them.

Why: a whole-network row says that an INT8 engine is slower than its FP16 one, not which layer
or why. Here each 1×1 convolution is timed over every INT8 tactic (with a linear, ReLU or SiLU
epilogue on random per-channel parameters) and every FP16 tactic (tiles, cuBLAS, cuBLASLt); each
depthwise layer is timed with the INT8 kernel ``dwconv2d_s8`` picks (the tiled one where it
applies), the one-thread-per-pixel ``dwconv_s8``, and the FP16 depthwise kernel, and the two INT8
outputs are compared bit for bit.

Usage: python bench/gpu_int8_layers.py [--batch 256] [--out bench/results/gpu_int8_layers_h100.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name, (spatial, C, K), epilogue: None (linear), "relu" or "silu"
CONVS_1X1 = [
    ("mobilenet_v2 project 32->16 at 112", (112, 32, 16), None),
    ("efficientnet_b0 expand 16->96 at 112, SiLU", (112, 16, 96), "silu"),
    ("efficientnet_b0 expand 112->672 at 14, SiLU", (14, 112, 672), "silu"),
    ("efficientnet_b0 expand 40->240 at 28, SiLU", (28, 40, 240), "silu"),
    ("mobilenet_v2 expand 24->144 at 56, ReLU", (56, 24, 144), "relu"),
    ("efficientnet_b0 expand 16->96 at 112 with ReLU instead", (112, 16, 96), "relu"),
    ("resnet50 1x1 256->64 at 56, ReLU", (56, 256, 64), "relu"),
]
# name, (spatial, C, window, stride), epilogue: "relu" (MobileNetV2's ReLU6 bound aside) or "silu"
# (EfficientNet-B0's, every depthwise layer)
DEPTHWISE = [
    ("mobilenet_v2 3x3 at 56x56x144", (56, 144, 3, 1), "relu"),
    ("mobilenet_v2 3x3/2 at 112x112x96", (112, 96, 3, 2), "relu"),
    ("mobilenet_v2 3x3 at 112x112x32", (112, 32, 3, 1), "relu"),
    ("efficientnet_b0 3x3 at 56x56x144, SiLU", (56, 144, 3, 1), "silu"),
    ("efficientnet_b0 3x3/2 at 112x112x96, SiLU", (112, 96, 3, 2), "silu"),
    ("efficientnet_b0 3x3 at 14x14x480, SiLU", (14, 480, 3, 1), "silu"),
    ("efficientnet_b0 5x5 at 7x7x1152, SiLU", (7, 1152, 5, 1), "silu"),
    ("efficientnet_b0 5x5 at 28x28x240, SiLU", (28, 240, 5, 1), "silu"),
    ("efficientnet_b0 5x5 at 28x28x240 with ReLU instead", (28, 240, 5, 1), "relu"),
]


# The tactic timer's operands are uniform int8 (variance 128**2 / 3 each), so a sum over C input
# channels has a standard deviation of about 5461 sqrt(C). Accumulator scales put x = sum * s_acc at a
# standard deviation of 1-4, as batch-normalised pre-activations are, and the output scale is what
# minmax calibration gives such data (about 5 sigma / 127): a calibrated layer, whose SiLU epilogue
# rarely saturates. (Scales of 1e-4-1e-3 regardless of C, as before, saturated most sums of the wide
# layers, which is neither a calibrated network nor what the epilogue's cost is there.)
X_STD, S_OUT = 2.0, 0.08


def epilogue8(c: int, k: int, kind: str | None, rng: np.random.Generator) -> Any:
    """Random per-channel INT8 epilogue parameters of a layer with ``c`` inputs and an int8 output."""
    from backends.gpu.kernels import int8 as k8
    from engine.ir.int8_math import requant_params

    sacc = rng.uniform(0.5, 2.0, k) * X_STD / (5461.0 * np.sqrt(c))
    bias = rng.integers(-2000, 2000, k).astype(np.int64)
    if kind == "silu":
        return k8.Epilogue8(k, bias, None, None, None, None, sacc, False, 127, None, None, "silu", S_OUT)
    sc, sh = requant_params(sacc / S_OUT)
    # the bound the builder proves from a layer's int8 weights (128 * sum|w| <= 128 * 128 * c): with
    # it the adds need not saturate, as in a real engine (without it every layer took the general path)
    bound = np.full(k, 128 * 128 * c, np.int64)
    return k8.Epilogue8(k, bias, None, None, sc.astype(np.int32), sh.astype(np.int32), None, kind == "relu",
                        127, None, bound)


def best(times: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(times.items(), key=lambda kv: kv[1])[:n]


def conv_row(name: str, shape: tuple[int, int, int], kind: str | None, batch: int,
             rng: np.random.Generator) -> dict[str, Any]:
    from backends.gpu import tactics
    from backends.gpu.kernels import conv as kc
    from backends.gpu.kernels import int8 as k8
    from backends.gpu.kernels.conv import ConvGeometry

    h, c, k = shape
    g = ConvGeometry(batch, h, h, c, k, 1, 1)
    epi = epilogue8(c, k, kind, rng)
    t8 = tactics.time_conv8(g, k8.candidate_tactics8(g, wgmma=k8.wgmma_usable8()), epi, False, k8.cp16(k), reps=10)
    t8.update(tactics.time_conv8_pointwise(g, epi, False, k8.cp16(k)))
    t8.update(tactics.time_conv8_stream(g, epi, False, k8.cp16(k)))
    act = (5 if kind == "silu" else 1 if kind == "relu" else 0, 0.0, 0.0)
    t16 = tactics.time_conv(g, kc.candidate_tactics(g, wgmma=kc.wgmma_usable()), act, False, reps=10)
    t16.update(tactics.time_conv_cublaslt(g, act, False))
    t16.update(tactics.time_conv_cublas(g, act, False))
    b8 = best(t8, 3)
    return {"layer": name, "rows": g.m, "int8_best_ms": b8, "fp16_best_ms": best(t16, 3),
            "int8_GB_per_s": round(g.m * (k8.cp16(c) + k8.cp16(k)) / b8[0][1] / 1e6, 1)}


def depthwise_geometry(batch: int, h: int, c: int, r: int, s: int) -> Any:
    """A depthwise layer's geometry as the lowering builds it (C = K, ``groups`` left at 1: the
    depthwise kernels take C = K as the layer's channel multiplier of 1)."""
    from backends.gpu.kernels.conv import ConvGeometry

    return ConvGeometry(batch, h, h, c, c, r, r, (s, s), (r // 2, r // 2))


def depthwise_row(name: str, shape: tuple[int, int, int, int], kind: str, batch: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    import cupy as cp

    from backends.gpu import tactics
    from backends.gpu.kernels import direct
    from backends.gpu.kernels import int8 as k8
    from backends.gpu.kernels import int8_dw as k8dw

    h, c, r, s = shape
    g = depthwise_geometry(batch, h, c, r, s)
    dev = k8.DeviceEpilogue.upload(epilogue8(r * r, c, kind, rng))
    c16 = k8.cp16(c)
    x = cp.asarray(rng.integers(-128, 128, (batch, h, h, c16), dtype=np.int8))
    w = cp.asarray(k8dw.pack_dw_weights8(rng.integers(-128, 128, (c, 1, r, r), dtype=np.int8)))
    y, ygen = cp.empty((batch, g.p, g.q, c16), cp.int8), cp.empty((batch, g.p, g.q, c16), cp.int8)
    gargs = tuple(k8.ptr(a) if i < 6 else a for i, a in enumerate(k8dw.dw_args(x, w, ygen, g, dev, None, c16)))

    def generic(_: Any) -> None:
        k8dw.dw_fn("dwconv_s8")((-(-k8dw.dw_threads(g) // 256),), (256,), gargs)

    named = [type("Named", (), {"name": n})() for n in ("int8", "int8_generic", "fp16")]
    ms = tactics._time_launches(named[:1], lambda t: k8dw.dwconv2d_s8(x, w, y, g, dev), 10)
    ms.update(tactics._time_launches(named[1:2], generic, 10))
    k8dw.dwconv2d_s8(x, w, y, g, dev)
    generic(None)
    xf = cp.asarray(rng.uniform(-1, 1, (batch, h, h, g.cp)).astype(np.float16))
    wf = cp.asarray(rng.uniform(-1, 1, (r, r, g.cp)).astype(np.float16))
    bf, yf = cp.zeros(g.cp, cp.float32), cp.empty((batch, g.p, g.q, g.cp), cp.float16)
    act = (5 if kind == "silu" else 1, 0.0, 0.0)
    ms.update(tactics._time_launches(named[2:], lambda t: direct.depthwise_conv(xf, wf, bf, yf, g, act), 10))
    return {"layer": name, "int8_kernel": k8dw.dw_launch8(x, w, y, g, dev, None, c16)[0], "ms": ms,
            "int8_bit_identical_to_generic": bool(cp.array_equal(y, ygen))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import cupy as cp
    from gpu_peers import environment, write_results

    rng = np.random.default_rng(0)
    rows = []
    for name, shape, kind in CONVS_1X1:
        rows.append(conv_row(name, shape, kind, args.batch, rng))
        print(json.dumps(rows[-1]), flush=True)
    for name, shape, kind in DEPTHWISE:
        rows.append(depthwise_row(name, shape, kind, args.batch, rng))
        print(json.dumps(rows[-1]), flush=True)
    env = environment()
    gpu = "h100" if "H100" in env["device"] else cp.cuda.runtime.getDeviceProperties(0)["name"].decode().split()[-1]
    out = Path(args.out or Path(__file__).parent / "results" / f"gpu_int8_layers_{gpu.lower()}.json")
    write_results(out, rows, batch=args.batch)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

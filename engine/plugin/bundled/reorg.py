"""``hetrt::Reorg``: YOLOv2's reorg layer (TensorRT's Reorg_TRT), with darknet's channel order.

darknet computes the forward reorg as ``reorg_cpu(input, w, h, c, batch, stride, forward=0,
output)``: it reads the input buffer as if it were a (C/s², H·s, W·s) tensor and writes the output
buffer as a (C, H, W) one, so

    out[b, k, j, i] = in_view[b, k % (C/s²), j·s + (k // (C/s²)) // s, i·s + (k // (C/s²)) % s]

with the result then read as (C·s², H/s, W/s). This is not ONNX SpaceToDepth (whose channel order is
block-offset major over the real input), and networks trained in darknet depend on it. The
implementation does the same with one reshape/transpose, on numpy or CuPy alike.
"""

from __future__ import annotations

from typing import Any

from engine.ir.plugin_registry import TensorDesc, impl, register


@register("hetrt::Reorg", version="1")
def reorg_shape(x: TensorDesc, stride: int = 2) -> TensorDesc:
    if x.rank != 4:
        raise ValueError(f"Reorg input must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    s = stride
    if s < 1 or h % s or w % s or c % (s * s):
        raise ValueError(f"Reorg stride {s} must divide H={h} and W={w}, and stride² must divide C={c}")
    if x.dtype.kind != "f":
        raise ValueError(f"Reorg input must be float, got {x.dtype}")
    return x.like((n, c * s * s, h // s, w // s))


def reorg(x: Any, stride: int) -> Any:
    """darknet's forward reorg on an (N, C, H, W) array (numpy or CuPy)."""
    n, c, h, w = x.shape
    s = stride
    oc = c // (s * s)
    view = x.reshape(n, oc, h, s, w, s)  # the input buffer read as (oc, H·s, W·s)
    out = view.transpose(0, 3, 5, 1, 2, 4)  # (n, dy, dx, oc, H, W): channel k = (dy·s + dx)·oc + c2
    return out.reshape(n, c * s * s, h // s, w // s)


@impl("hetrt::Reorg", backend="reference")
def reorg_reference(x, stride: int):
    return reorg(x, stride).copy()


@impl("hetrt::Reorg", backend="gpu")
def reorg_gpu(x, stride: int, stream=None):
    import cupy

    with stream or cupy.cuda.get_current_stream():
        return cupy.ascontiguousarray(reorg(x, stride))

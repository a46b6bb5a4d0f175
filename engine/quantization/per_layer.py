"""Per-layer error against FP32: where quantization error enters a network.

Both networks (the built one and the same optimized network in FP32, which has the same tensor
names) run on the same feeds through the reference executor; every tensor both produce is
compared. Errors accumulate along the network, so a layer whose SQNR drops well below its
inputs' is where error enters — the layer to pin with ``--layer-precision NAME:fp16``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import numpy as np

from engine.ir.int8_math import sqnr_db
from engine.ir.layers import LayerKind
from engine.ir.network import Layer, Network


@dataclass(frozen=True)
class LayerError:
    layer: str
    kind: str
    precision: str
    tensor: str
    sqnr_db: float
    max_abs: float
    ref_max: float


def _capture(network: Network, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from backends.reference.executor import execute

    seen: dict[str, np.ndarray] = {}

    def observer(layer: Layer, outs: list[np.ndarray]) -> None:
        if layer.kind is LayerKind.CONSTANT:
            return
        for name, value in zip(layer.outputs, outs):
            if value.dtype.kind == "f":
                seen[name] = np.asarray(value, dtype=np.float32)

    execute(network, feeds, observer=observer)
    return seen


def compare_networks(reference: Network, network: Network, feeds: dict[str, np.ndarray]) -> list[LayerError]:
    ref = _capture(reference, feeds)
    got = _capture(network, feeds)
    rows = []
    for layer in network.layers:
        for t in layer.outputs:
            if t in ref and t in got and ref[t].shape == got[t].shape:
                d = np.abs(got[t].astype(np.float64) - ref[t])
                rows.append(LayerError(layer.name, layer.kind.value,
                                       (layer.precision.value if layer.precision else "fp32"), t,
                                       sqnr_db(ref[t], got[t]), float(d.max()) if d.size else 0.0,
                                       float(np.abs(ref[t]).max()) if d.size else 0.0))
    return rows


def format_rows(rows: list[LayerError], threshold: float = 30.0) -> str:
    lines = [f"{'layer':44s} {'kind':16s} {'prec':5s} {'SQNR dB':>8s} {'max|err|':>10s} {'max|ref|':>10s}"]
    for r in rows:
        flag = "  <-- below threshold" if r.sqnr_db < threshold else ""
        lines.append(f"{r.layer[:44]:44s} {r.kind:16s} {r.precision:5s} {r.sqnr_db:8.2f} {r.max_abs:10.4g} "
                     f"{r.ref_max:10.4g}{flag}")
    prev = float("inf")
    entry = []
    for r in rows:
        if r.sqnr_db < threshold and prev >= threshold:
            entry.append(r.layer)
        prev = r.sqnr_db
    if entry:
        lines.append("Error enters at: " + ", ".join(entry[:5]) + " — try " +
                     " ".join(f"--layer-precision {shlex.quote(n + ':fp16')}" for n in entry[:3]))
    return "\n".join(lines)

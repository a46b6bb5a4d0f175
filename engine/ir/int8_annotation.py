"""How an INT8 layer carries its quantization parameters: reserved entries of ``layer.weights``.

Keeping them among the weights makes them travel with the layer through plan serialization
without a new plan field. Keys:

* ``int8.input_scales``: float32, one per-tensor scale per layer input.
* ``int8.output_scale``: float32 (1,), present when the output is requantized to int8; absent when
  the layer hands its result on in float (a network output, or an explicit-quantization layer
  whose output is not followed by a Q/DQ pair).
* ``int8.kernel_scales``: float32 (K,), per-output-channel weight scales (convolution, FC); the
  layer's ``kernel`` weight then holds the int8 weights themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.network import Layer

INPUT_SCALES = "int8.input_scales"
OUTPUT_SCALE = "int8.output_scale"
KERNEL_SCALES = "int8.kernel_scales"
KEYS = (INPUT_SCALES, OUTPUT_SCALE, KERNEL_SCALES)


@dataclass(frozen=True)
class Int8Spec:
    input_scales: tuple[float, ...]
    output_scale: float | None = None
    kernel_scales: np.ndarray | None = None


def write(layer: Layer, spec: Int8Spec) -> None:
    layer.weights[INPUT_SCALES] = np.asarray(spec.input_scales, dtype=np.float32)
    if spec.output_scale is not None:
        layer.weights[OUTPUT_SCALE] = np.asarray([spec.output_scale], dtype=np.float32)
    else:
        layer.weights.pop(OUTPUT_SCALE, None)
    if spec.kernel_scales is not None:
        layer.weights[KERNEL_SCALES] = np.asarray(spec.kernel_scales, dtype=np.float32)


def read(layer: Layer) -> Int8Spec:
    w = layer.weights
    if INPUT_SCALES not in w:
        raise UnsupportedError(f"layer {layer.describe()} is marked INT8 but carries no quantization scales "
                               f"(build it with calibration or explicit Q/DQ)")
    ins = tuple(float(s) for s in np.asarray(w[INPUT_SCALES]).reshape(-1))
    if len(ins) != len(layer.inputs):
        raise UnsupportedError(f"layer {layer.describe()}: {len(ins)} input scales for {len(layer.inputs)} inputs")
    out = float(np.asarray(w[OUTPUT_SCALE]).reshape(-1)[0]) if OUTPUT_SCALE in w else None
    ks = np.asarray(w[KERNEL_SCALES], dtype=np.float32) if KERNEL_SCALES in w else None
    return Int8Spec(ins, out, ks)


def strip(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights without the INT8 entries (what the float kernels and fingerprints see)."""
    return {k: v for k, v in weights.items() if k not in KEYS}

"""Real networks' INT8 layers take the fast epilogue path (``int8.device_params``'s flag clear):
plain adds and the one multiply-add requant. The general path (saturating adds, 64-bit requant)
is several times the instructions an output, so a calibration or rule change that pushed ordinary
layers onto it would slow every INT8 engine without changing a bit of its output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from backends.gpu.kernels.int8 import device_params, epilogue_params, quantized_kernel
from engine.builder import Builder, BuilderConfig
from engine.ir import int8_annotation as annotation
from engine.ir.errors import UnsupportedError
from engine.models.zoo import resnet
from engine.onnx_parser import parse
from engine.quantization import make_calibrator

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def _paths(model, rng) -> dict[str, list[str]]:
    """Layer names by epilogue path of ``model`` built INT8 (minmax over two random images)."""
    inp = model.graph.input[0]
    shape = (1,) + tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])
    calib = [{inp.name: rng.normal(size=shape).astype(np.float32)} for _ in range(2)]
    contents = Builder().build(parse(model), BuilderConfig(int8=True, fp16=True,
                                                           calibrator=make_calibrator("minmax", calib)))
    out: dict[str, list[str]] = {"fast": [], "general": [], "other": []}
    for layer in contents.network.layers:
        if layer.kind.value != "convolution":
            continue
        try:
            spec = annotation.read(layer)
        except UnsupportedError:  # left in FP16 (no scales): not an INT8 epilogue
            continue
        if spec is None or spec.kernel_scales is None:
            continue
        p = layer.params
        e = epilogue_params(layer, p.activation, spec.input_scales[1] if getattr(p, "residual", False) else None,
                            quantized_kernel(layer))
        out["other" if e.osc is None else "general" if device_params(e)[1] else "fast"].append(layer.name)
    return out


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_every_requantizing_layer_takes_the_fast_path(rng, name):
    if name == "resnet50":
        model = resnet(50, image=96)
    else:
        import cnn_archs

        model = cnn_archs.ARCHS[name](image=96)
    paths = _paths(model, rng)
    assert len(paths["fast"]) >= 16 and paths["general"] == [], paths["general"]

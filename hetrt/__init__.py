"""hetrt's public Python API: import from here, not from internal module paths.

    import hetrt

    plan = hetrt.build_from_onnx("model.onnx", hetrt.BuilderConfig(fp16=True))
    engine = hetrt.Runtime().deserialize(plan)
    outputs = engine.create_execution_context().execute({"input": x})

The names below are stable; the packages behind them (``engine``, ``backends``, ``scheduler``,
``dla_sim``) may be reorganised between versions.
"""

from engine import __version__
from engine.builder import Builder, BuilderConfig, build_from_onnx, build_serialized
from engine.compare import compare_arrays
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import (
    BuildError,
    ExecutionError,
    HetrtError,
    NetworkError,
    OutputError,
    ParserError,
    PlanError,
    UnsupportedError,
)
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.profiler import Profiler
from engine.runtime import Engine, ExecutionContext, Runtime

__all__ = [
    "BuildError", "Builder", "BuilderConfig", "DataType", "Engine", "ExecutionContext", "ExecutionError",
    "HetrtError", "Logger", "Network", "NetworkError", "OutputError", "ParserError", "PlanError", "Precision",
    "Profiler", "Runtime", "Severity", "UnsupportedError", "__version__", "build_from_onnx", "build_model",
    "build_serialized", "compare_arrays", "load_plan", "parse_onnx", "save_plan",
]


def parse_onnx(model, input_shapes=None, batch=None) -> Network:
    """An ONNX model (path or ModelProto) as a hetrt Network (TensorRT's OnnxParser)."""
    from engine.onnx_parser import parse

    return parse(model, input_shapes=input_shapes, batch=batch)


def build_model(name: str):
    """A bundled model (resnet18, resnet18_small, resnet50, mobilenet_v2) as an ONNX ModelProto."""
    from engine.models import build_model as _build

    return _build(name)


def save_plan(path, plan: bytes) -> None:
    """Write plan bytes atomically (a temporary file in the same folder, then a rename)."""
    from engine.ir.fileio import atomic_write_bytes

    atomic_write_bytes(path, plan)


def load_plan(path, logger: Logger | None = None) -> Engine:
    """Read a plan file and deserialize it into an Engine."""
    from pathlib import Path

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PlanError(f"cannot read plan {path}: {e.strerror or e}") from None
    return Runtime(logger).deserialize(data)

"""The runtime: plan bytes -> ``Engine`` -> ``ExecutionContext`` (TensorRT's IRuntime objects).

One executor (``executor.py``) runs every plan's partitions -- reference, GPU and DLA -- through
the backend contract (``backends.contract``): ``partitions.py`` resolves the placement and compiles
each partition once per engine, ``context.py`` holds per-context state and the frame stores,
``engine.py`` the loaded plan and ``inspector.py`` its descriptions. docs/architecture.md has the
picture.
"""

from engine.profiler import Profiler

from .context import ExecutionContext
from .engine import Engine, IOTensor, Runtime
from .executor import Event, check_order
from .partitions import BACKENDS, FALLBACK_BACKEND, Partition

__all__ = ["BACKENDS", "FALLBACK_BACKEND", "Engine", "Event", "ExecutionContext", "IOTensor", "Partition",
           "Profiler", "Runtime", "check_order"]

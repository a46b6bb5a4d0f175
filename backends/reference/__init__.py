"""The numpy reference backend: the numerical oracle for every other backend and the CPU fallback."""

from .executor import execute
from .kernels import run_layer

__all__ = ["execute", "run_layer"]

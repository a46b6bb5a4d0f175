"""GPU backend: NVRTC-compiled CuPy kernels on NHWC fp16 tensors, replayed as CUDA graphs.

Nothing here imports CuPy at module import time, so the package loads on machines without CUDA;
``gpu_available()`` says whether the backend can run and, if not, why.
"""

from backends.gpu.availability import gpu_available

__all__ = ["gpu_available"]

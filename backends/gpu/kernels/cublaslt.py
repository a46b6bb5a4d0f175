"""cuBLASLt GEMMs with the bias, the residual and a ReLU fused into the library's epilogue.

Why: a GEMM-shaped layer on cuBLAS (``conv2d_cublas``) writes its product and then reads and
writes it again in ``gemm_epilogue`` to add the bias and the residual; on a wide FC (ConvNeXt's,
a transformer's MLP) that second pass costs as much memory traffic as the GEMM's own output.
cuBLASLt computes ``D = epilogue(alpha·op(A)·op(B) + beta·C)``, whose epilogue adds a bias vector
per row of D and may apply a ReLU (cuBLAS documentation, "cublasLtMatmul", "cublasLtEpilogue_t"):
with C the residual and beta = 1 the layer is one launch, ``act(x·Wᵀ + b + r)`` as the tiles
compute it. Other activations keep the tiles or ``conv2d_cublas``.

Layouts: as ``conv2d_cublas``, row-major ``y (M × K) = x (M × C) · Wᵀ`` is the column-major
``Yᵀ (K × M) = W (C × K stored, transposed) · Xᵀ (C × M)``; the bias (K) is per row of Yᵀ and has
D's type, fp16: cuBLASLt takes a bias of the scale type (fp32) only on its IMMA and FP8 kernels
(cublasLt.h, ``CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE``), and a first version that asked for an fp32
bias with fp16 D got no algorithm from the heuristic on an H100. The lowering uploads the layer's
bias as fp16 for this tactic (its values are fp16-rounded for every FP16 tactic anyway).
Descriptors are immutable once made and kept per (shape, epilogue, bias pointer), so replays and
concurrent contexts share them safely; each stream has one workspace, shared with the cuBLAS
handle on it (``cuda_lib``; a CUDA graph captures the call with it, as for ``cublas``).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

from backends.gpu.kernels.cuda_lib import WORKSPACE_BYTES, LazyLibrary, stream_workspace
from engine.ir.errors import ExecutionError

CUDA_R_16F, CUDA_R_32F = 2, 0
COMPUTE_32F = 68
OP_N, OP_T = 0, 1
# cublasLtMatmulDescAttributes_t, cublasLtMatmulPreferenceAttributes_t, cublasLtEpilogue_t (cublasLt.h)
DESC_TRANSA, DESC_TRANSB, DESC_EPILOGUE, DESC_BIAS_POINTER = 3, 4, 7, 8
PREF_MAX_WORKSPACE_BYTES = 1
EPILOGUE_BIAS, EPILOGUE_RELU_BIAS = 4, 6
# activation code (backends/gpu/activations.py) -> the epilogue that computes it after the bias
EPILOGUES = {0: EPILOGUE_BIAS, 1: EPILOGUE_RELU_BIAS}


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves_count", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _declare(lib: Any) -> None:
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.cublasLtCreate.argtypes = [ctypes.POINTER(vp)]
    lib.cublasLtMatmulDescCreate.argtypes = [ctypes.POINTER(vp), ctypes.c_int, ctypes.c_int]
    lib.cublasLtMatmulDescSetAttribute.argtypes = [vp, ctypes.c_int, vp, sz]
    lib.cublasLtMatrixLayoutCreate.argtypes = [ctypes.POINTER(vp), ctypes.c_int, ctypes.c_uint64,
                                               ctypes.c_uint64, ctypes.c_int64]
    lib.cublasLtMatmulPreferenceCreate.argtypes = [ctypes.POINTER(vp)]
    lib.cublasLtMatmulPreferenceSetAttribute.argtypes = [vp, ctypes.c_int, vp, sz]
    lib.cublasLtMatmulAlgoGetHeuristic.argtypes = [vp, vp, vp, vp, vp, vp, vp, ctypes.c_int,
                                                   ctypes.POINTER(_HeuristicResult), ctypes.POINTER(ctypes.c_int)]
    lib.cublasLtMatmul.argtypes = [vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, sz, vp]


LIBRARY = LazyLibrary("cublasLt", "cuBLASLt", _declare)
_library = LIBRARY.get
available = LIBRARY.available
_lock = threading.Lock()  # the handle and the plans


def _check(status: int, what: str) -> None:
    if status != 0:
        raise ExecutionError(f"cuBLASLt {what} failed with status {status}")


def _make(fn: str, *args: Any) -> ctypes.c_void_p:
    out = ctypes.c_void_p()
    _check(getattr(_library(), fn)(ctypes.byref(out), *args), fn)
    return out


def _set(fn: str, obj: ctypes.c_void_p, attr: int, value: Any) -> None:
    _check(getattr(_library(), fn)(obj, attr, ctypes.byref(value), ctypes.sizeof(value)), f"{fn}({attr})")


_handle: ctypes.c_void_p | None = None


def _lt_handle() -> ctypes.c_void_p:
    global _handle
    with _lock:
        if _handle is None:
            _handle = _make("cublasLtCreate")
        return _handle


@dataclass
class LtGemm:
    """One fused-epilogue GEMM: y (M × K, fp16) = epilogue(x (M × C) · wᵀ + r) with its bias."""

    desc: ctypes.c_void_p
    a: ctypes.c_void_p
    b: ctypes.c_void_p
    d: ctypes.c_void_p
    algo: _HeuristicResult


def plan(m: int, k: int, c: int, act_code: int, bias_ptr: int) -> LtGemm | None:
    """The descriptors and the library's first heuristic choice, or None where cuBLASLt offers no
    algorithm for them (an unsupported epilogue, bias type or alignment)."""
    if act_code not in EPILOGUES:
        return None
    desc = _make("cublasLtMatmulDescCreate", COMPUTE_32F, CUDA_R_32F)
    _set("cublasLtMatmulDescSetAttribute", desc, DESC_TRANSA, ctypes.c_int32(OP_T))
    _set("cublasLtMatmulDescSetAttribute", desc, DESC_TRANSB, ctypes.c_int32(OP_N))
    _set("cublasLtMatmulDescSetAttribute", desc, DESC_EPILOGUE, ctypes.c_uint32(EPILOGUES[act_code]))
    _set("cublasLtMatmulDescSetAttribute", desc, DESC_BIAS_POINTER, ctypes.c_void_p(bias_ptr))
    a = _make("cublasLtMatrixLayoutCreate", CUDA_R_16F, c, k, c)  # W stored C x K column-major
    b = _make("cublasLtMatrixLayoutCreate", CUDA_R_16F, c, m, c)  # x stored C x M column-major
    d = _make("cublasLtMatrixLayoutCreate", CUDA_R_16F, k, m, k)  # y (and r) stored K x M column-major
    pref = _make("cublasLtMatmulPreferenceCreate")
    _set("cublasLtMatmulPreferenceSetAttribute", pref, PREF_MAX_WORKSPACE_BYTES, ctypes.c_uint64(WORKSPACE_BYTES))
    result, count = _HeuristicResult(), ctypes.c_int(0)
    status = _library().cublasLtMatmulAlgoGetHeuristic(_lt_handle(), desc, a, b, d, d, pref, 1, ctypes.byref(result),
                                                       ctypes.byref(count))
    if status != 0 or count.value < 1 or result.state != 0:
        return None
    return LtGemm(desc, a, b, d, result)


_plans: dict[tuple[int, ...], LtGemm | None] = {}


def _plan_for(m: int, k: int, c: int, act_code: int, bias_ptr: int) -> LtGemm | None:
    key = (m, k, c, act_code, bias_ptr)
    if key not in _plans:
        p = plan(m, k, c, act_code, bias_ptr)
        with _lock:
            _plans.setdefault(key, p)
    return _plans[key]


def supported(m: int, k: int, c: int, act_code: int, bias: Any) -> bool:
    """Whether cuBLASLt runs this GEMM here (the library, the epilogue and an algorithm for it)."""
    return available() and _plan_for(m, k, c, act_code, bias.data.ptr) is not None


def gemm(x: Any, w: Any, bias: Any, y: Any, m: int, k: int, c: int, act_code: int, residual: Any = None) -> None:
    """Enqueue y = act(x · wᵀ + bias + residual) on the current stream (fp16 x (M × C), w (K × C),
    y and residual (M × K), bias (K)); ``supported`` must hold."""
    import cupy

    p = _plan_for(m, k, c, act_code, bias.data.ptr)
    if p is None:
        raise ExecutionError(f"cuBLASLt has no algorithm for a {m}x{k}x{c} GEMM with activation {act_code}")
    ws = stream_workspace()
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(1.0 if residual is not None else 0.0)
    vp = ctypes.c_void_p
    r = residual if residual is not None else y
    status = _library().cublasLtMatmul(
        _lt_handle(), p.desc, ctypes.byref(alpha), vp(w.data.ptr), p.a, vp(x.data.ptr), p.b, ctypes.byref(beta),
        vp(r.data.ptr), p.d, vp(y.data.ptr), p.d, ctypes.byref(p.algo.algo), vp(ws.data.ptr), WORKSPACE_BYTES,
        vp(cupy.cuda.get_current_stream().ptr))
    _check(status, "Matmul")

"""cuBLAS batched GEMMs that a CUDA graph can capture (fp16 in and out, fp32 accumulation).

CuPy's cuBLAS wrapper refuses every call during stream capture (it re-binds its handle's stream
on each call). cuBLAS itself supports capture when the handle is bound to the stream and owns a
workspace before the capture begins (cuBLAS documentation, "CUDA Graphs Support"): then a GEMM
allocates nothing while it is captured. This module calls the library through ctypes with one
handle per stream, each with its stream's workspace, both set up on the handle's first use (always
outside a capture: ``LaunchSequence.capture`` runs every step once before capturing).

The GEMM is described row-major, as the IR's MatrixMultiply is: ``Y[b] = A[b] · B[b]`` with
``Y[b]`` an m×n row-major block. ``plan_gemm`` maps element strides onto cuBLAS's column-major
``cublasGemmStridedBatchedEx`` (computing ``Yᵀ = Bᵀ·Aᵀ``); ``reference_gemm`` replays that call in
numpy on flat memory, so the mapping is checked without a GPU.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.gpu.kernels.cuda_lib import WORKSPACE_BYTES, LazyLibrary, stream_key, stream_workspace
from engine.ir.errors import ExecutionError

OP_N, OP_T = 0, 1
CUDA_R_16F = 2
COMPUTE_32F = 68
GEMM_DEFAULT = -1


@dataclass(frozen=True)
class GemmPlan:
    """One cublasGemmStridedBatchedEx call (column-major operands; see ``plan_gemm``)."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    stride_a: int
    ldb: int
    stride_b: int
    ldc: int
    stride_c: int
    batch: int


def _matrix(rows: int, cols: int, s_row: int, s_col: int) -> tuple[bool, int] | None:
    """(row_major, leading dimension) of a rows×cols matrix with element strides, or None."""
    if s_col == 1 or cols == 1:
        ld = s_row if rows > 1 else cols
        if ld >= cols:
            return True, ld
    if s_row == 1 or rows == 1:
        ld = s_col if cols > 1 else rows
        if ld >= rows:
            return False, ld
    return None


def _batch_stride(shape: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """The one stride that walks every batch index in row-major order, or None."""
    dims = [(d, s) for d, s in zip(shape, strides) if d > 1]
    if not dims:
        return 0
    if all(s == 0 for _, s in dims):
        return 0
    for (_, s_outer), (d_inner, s_inner) in zip(dims, dims[1:]):
        if s_outer != s_inner * d_inner:
            return None
    return dims[-1][1]


def plan_gemm(batch: tuple[int, ...], m: int, n: int, k: int, a_strides: tuple[int, ...],
              b_strides: tuple[int, ...]) -> GemmPlan | None:
    """The cuBLAS call for a row-major batched product, or None where strides do not fit one.

    ``a_strides``: element strides of A over (*batch, m, k); ``b_strides`` of B over (*batch, k, n)
    (0 on broadcast batch dims). Y is (*batch, m, n) contiguous."""
    nb = len(batch)
    sa = _batch_stride(batch, a_strides[:nb])
    sb = _batch_stride(batch, b_strides[:nb])
    a = _matrix(m, k, *a_strides[nb:])
    b = _matrix(k, n, *b_strides[nb:])
    if sa is None or sb is None or a is None or b is None or min(m, n, k) < 1:
        return None
    # Column-major view: Y^T (n×m, ld n) = B^T (n×k) · A^T (k×m). A row-major B is B^T column-major.
    b_row, ldb = b
    a_row, lda = a
    count = int(np.prod(batch, dtype=np.int64)) if batch else 1
    return GemmPlan(OP_N if b_row else OP_T, OP_N if a_row else OP_T, n, m, k, ldb, sb, lda, sa, n, m * n, count)


def reference_gemm(p: GemmPlan, a_flat: np.ndarray, b_flat: np.ndarray) -> np.ndarray:
    """What cuBLAS computes for ``p`` with A' = ``b_flat`` and B' = ``a_flat`` (float64, flat Y)."""
    def col(flat: np.ndarray, trans: int, rows: int, cols: int, ld: int, off: int) -> np.ndarray:
        r, c = (cols, rows) if trans == OP_T else (rows, cols)  # stored matrix before op()
        idx = off + np.arange(r)[:, None] + ld * np.arange(c)[None, :]
        mat = flat[idx].astype(np.float64)
        return mat.T if trans == OP_T else mat

    y = np.zeros(p.batch * p.stride_c)
    for i in range(p.batch):
        x1 = col(b_flat, p.transa, p.m, p.k, p.lda, i * p.stride_a)
        x2 = col(a_flat, p.transb, p.k, p.n, p.ldb, i * p.stride_b)
        c = x1 @ x2  # m' × n' column-major
        idx = i * p.stride_c + np.arange(p.m)[:, None] + p.ldc * np.arange(p.n)[None, :]
        y[idx] = c
    return y


def _declare(lib: Any) -> None:
    lib.cublasGemmStridedBatchedEx.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
        ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_longlong,
        ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.cublasSetStream_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.cublasSetWorkspace_v2.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(ctypes.c_void_p)]


LIBRARY = LazyLibrary("cublas", "cuBLAS", _declare)
_library = LIBRARY.get
available = LIBRARY.available


def _check(status: int, what: str) -> None:
    if status != 0:
        raise ExecutionError(f"cuBLAS {what} failed with status {status}")


class _Handle:
    """A cuBLAS handle bound to one stream, with that stream's workspace (``cuda_lib``)."""

    def __init__(self, key: tuple[int, int]) -> None:
        lib = _library()
        h = ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(h)), "create")
        self.ptr = h
        self.workspace = stream_workspace(key)
        _check(lib.cublasSetStream_v2(h, ctypes.c_void_p(key[1])), "set stream")
        _check(lib.cublasSetWorkspace_v2(h, ctypes.c_void_p(self.workspace.data.ptr), WORKSPACE_BYTES),
               "set workspace")
        self.alpha = ctypes.c_float(1.0)
        self.beta = ctypes.c_float(0.0)


_handles: dict[tuple[int, int], _Handle] = {}
_handles_lock = threading.Lock()


def _handle_for_current_stream() -> _Handle:
    key = stream_key()
    h = _handles.get(key)
    if h is None:
        with _handles_lock:
            h = _handles.get(key)
            if h is None:
                h = _handles[key] = _Handle(key)
    return h


def gemm(p: GemmPlan, a: Any, b: Any, y: Any) -> None:
    """Enqueue Y = A·B (fp16 CuPy arrays, the plan's strides) on the current stream."""
    lib = _library()
    h = _handle_for_current_stream()
    vp = ctypes.c_void_p
    status = lib.cublasGemmStridedBatchedEx(
        h.ptr, p.transa, p.transb, p.m, p.n, p.k, ctypes.byref(h.alpha),
        vp(b.data.ptr), CUDA_R_16F, p.lda, p.stride_a, vp(a.data.ptr), CUDA_R_16F, p.ldb, p.stride_b,
        ctypes.byref(h.beta), vp(y.data.ptr), CUDA_R_16F, p.ldc, p.stride_c, p.batch, COMPUTE_32F, GEMM_DEFAULT)
    _check(status, "GemmStridedBatchedEx")

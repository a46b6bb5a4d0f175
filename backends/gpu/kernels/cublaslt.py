"""cuBLASLt GEMMs with the bias, the residual and ReLU fused into the library's epilogue.

A GEMM-shaped convolution (1x1, stride 1) or FC layer on cuBLAS used to take two passes: the
product, then ``gemm_epilogue`` reading the output back for bias, residual and activation. On
the large 1x1 layers of a batch-256 CNN that second pass moves as many bytes as the GEMM itself.
cuBLASLt computes ``D = act(alpha·op(A)·op(B) + beta·C + bias)`` in one kernel (cuBLASLt
documentation, ``cublasLtMatmul`` and ``cublasLtEpilogue_t``): the residual is ``C`` with
``beta = 1`` and the bias (fp32, ``CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE``) and ReLU are the
epilogue, so one pass does all of it.

Row-major ``Y (m×n) = X (m×k) · Wᵀ`` with ``W`` n×k row-major is, column-major,
``Yᵀ (n×m, ld n) = op_T(W as k×n, ld k) · (X as k×m, ld k)``, and the bias runs along Yᵀ's rows
as cuBLASLt requires. ``LtGemm.layouts`` holds that mapping and ``reference_lt`` replays it in
numpy, so the mapping is checked without a GPU.

Only activations cuBLASLt computes exactly as the IR defines them are fused (none and ReLU; its
GELU is the tanh form). ``fusable`` says which; the caller keeps the two-pass path otherwise, and
also where this library, an algorithm for the shape, or 16-byte alignment is missing.
A call is graph-capturable once its (shape, stream) state exists: the handle, the workspace and
the algorithm are made on the first call, which ``LaunchSequence.capture`` always runs uncaptured.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.ir.errors import ExecutionError

CUDA_R_16F, CUDA_R_32F = 2, 0
COMPUTE_32F = 68
OP_N, OP_T = 0, 1
DESC_TRANSA, DESC_TRANSB, DESC_EPILOGUE, DESC_BIAS_POINTER, DESC_BIAS_DATA_TYPE = 3, 4, 7, 8, 26
PREF_MAX_WORKSPACE_BYTES = 1
PREF_MIN_ALIGNMENT = (5, 6, 7, 8)  # A, B, C, D
EPILOGUE_DEFAULT, EPILOGUE_RELU, EPILOGUE_BIAS = 1, 2, 4
ALIGN = 16
WORKSPACE_BYTES = 32 << 20

# activation code (backends/gpu/activations.py) -> the cuBLASLt epilogue without bias
_ACT_EPILOGUE = {0: EPILOGUE_DEFAULT, 1: EPILOGUE_RELU}


class _HeuristicResult(ctypes.Structure):
    """cublasLtMatmulHeuristicResult_t."""

    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves_count", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


@dataclass(frozen=True)
class LtGemm:
    """``Y = act(X · Wᵀ + bias + R)``: X m×k, W n×k, Y and R m×n, all row-major fp16."""

    m: int
    n: int
    k: int
    act: int  # activation code; see ``fusable``
    bias: bool
    residual: bool

    @property
    def epilogue(self) -> int:
        return _ACT_EPILOGUE[self.act] | (EPILOGUE_BIAS if self.bias else 0)

    def layouts(self) -> dict[str, tuple[int, int, int]]:
        """(rows, cols, ld) of each stored column-major operand: A = W (op T), B = X, C = D = Yᵀ."""
        return {"A": (self.k, self.n, self.k), "B": (self.k, self.m, self.k), "D": (self.n, self.m, self.n)}


def fusable(act: int) -> bool:
    """Whether cuBLASLt's epilogue computes activation ``act`` as the IR defines it."""
    return act in _ACT_EPILOGUE


def reference_lt(p: LtGemm, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
                 res: np.ndarray | None) -> np.ndarray:
    """What cuBLASLt computes for ``p`` on the flat buffers of X, W (and R), in float64, as the
    row-major m×n Y: the column-major operands are rebuilt from ``layouts`` alone."""
    def col(flat: np.ndarray, rows: int, cols: int, ld: int) -> np.ndarray:
        return flat.reshape(-1)[np.arange(rows)[:, None] + ld * np.arange(cols)[None, :]].astype(np.float64)

    lay = p.layouts()
    a = col(w, *lay["A"]).T  # op T: n×k
    d = a @ col(x, *lay["B"])  # n×m
    if res is not None:
        d = d + col(res, *lay["D"])
    if p.bias:
        d = d + np.asarray(bias, np.float64)[:, None]
    if p.act == 1:
        d = np.maximum(d, 0.0)
    out = np.empty(p.m * p.n)
    out[np.arange(p.n)[:, None] + p.n * np.arange(p.m)[None, :]] = d
    return out.reshape(p.m, p.n)


_lib: Any = None
_lib_error: str | None = None
_lock = threading.Lock()


def _declare(lib: Any) -> None:
    vp, i32, u64, i64, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int64, ctypes.c_size_t
    pvp = ctypes.POINTER(vp)
    sigs = {
        "cublasLtCreate": [pvp],
        "cublasLtMatmulDescCreate": [pvp, i32, i32],
        "cublasLtMatmulDescSetAttribute": [vp, i32, vp, sz],
        "cublasLtMatrixLayoutCreate": [pvp, i32, u64, u64, i64],
        "cublasLtMatmulPreferenceCreate": [pvp],
        "cublasLtMatmulPreferenceSetAttribute": [vp, i32, vp, sz],
        "cublasLtMatmulAlgoGetHeuristic": [vp, vp, vp, vp, vp, vp, vp, i32, ctypes.POINTER(_HeuristicResult),
                                           ctypes.POINTER(i32)],
        # the algo argument points at the heuristic result, whose first field is the algo
        "cublasLtMatmul": [vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, ctypes.POINTER(_HeuristicResult),
                           vp, sz, vp],
    }
    for name, args in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ctypes.c_int


def _library() -> Any:
    """libcublasLt of the CUDA major version CuPy runs on; raises ExecutionError if absent."""
    global _lib, _lib_error
    with _lock:
        if _lib is None and _lib_error is None:
            from backends.gpu.kernels.cublas import open_versioned

            try:
                lib = open_versioned("cublasLt")
                _declare(lib)
                _lib = lib
            except (OSError, AttributeError) as e:
                _lib_error = str(e)
        if _lib is None:
            raise ExecutionError(f"cuBLASLt is not available ({_lib_error})")
        return _lib


def available() -> bool:
    try:
        _library()
        return True
    except Exception:  # no CuPy, no GPU, no library: the two-pass path takes the layer
        return False


def _check(status: int, what: str) -> None:
    if status != 0:
        raise ExecutionError(f"cuBLASLt {what} failed with status {status}")


def _set(setter: Any, obj: Any, attr: int, value: Any) -> None:
    _check(setter(obj, attr, ctypes.byref(value), ctypes.sizeof(value)), f"set attribute {attr}")


class _Prepared:
    """The descriptors and the chosen algorithm of one ``LtGemm`` (None where none exists)."""

    def __init__(self, lib: Any, handle: Any, p: LtGemm) -> None:
        vp = ctypes.c_void_p
        self.desc = vp()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), COMPUTE_32F, CUDA_R_32F), "desc create")
        setd = lib.cublasLtMatmulDescSetAttribute
        _set(setd, self.desc, DESC_TRANSA, ctypes.c_int32(OP_T))
        _set(setd, self.desc, DESC_TRANSB, ctypes.c_int32(OP_N))
        _set(setd, self.desc, DESC_EPILOGUE, ctypes.c_uint32(p.epilogue))
        if p.bias:
            _set(setd, self.desc, DESC_BIAS_DATA_TYPE, ctypes.c_int32(CUDA_R_32F))
            _set(setd, self.desc, DESC_BIAS_POINTER, vp(ALIGN))  # alignment the heuristic may assume
        self.layout = {}
        for key, (rows, cols, ld) in p.layouts().items():
            lay = vp()
            _check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(lay), CUDA_R_16F, rows, cols, ld), "layout create")
            self.layout[key] = lay
        pref = vp()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "preference create")
        setp = lib.cublasLtMatmulPreferenceSetAttribute
        _set(setp, pref, PREF_MAX_WORKSPACE_BYTES, ctypes.c_uint64(WORKSPACE_BYTES))
        for attr in PREF_MIN_ALIGNMENT:
            _set(setp, pref, attr, ctypes.c_uint32(ALIGN))
        self.result = _HeuristicResult()
        found = ctypes.c_int(0)
        lay = self.layout
        status = lib.cublasLtMatmulAlgoGetHeuristic(handle, self.desc, lay["A"], lay["B"], lay["D"], lay["D"], pref,
                                                    1, ctypes.byref(self.result), ctypes.byref(found))
        self.ok = status == 0 and found.value > 0 and self.result.state == 0
        self.lock = threading.Lock()


class _State:
    """Per device: one cuBLASLt handle, a workspace per stream, prepared GEMMs per shape."""

    def __init__(self) -> None:
        lib = _library()
        self.handle = ctypes.c_void_p()
        _check(lib.cublasLtCreate(ctypes.byref(self.handle)), "create")
        self.workspaces: dict[int, Any] = {}
        self.prepared: dict[LtGemm, _Prepared] = {}


_states: dict[int, _State] = {}


def _state() -> _State:
    import cupy

    dev = cupy.cuda.runtime.getDevice()
    with _lock:
        st = _states.get(dev)
    if st is None:
        st = _State()
        with _lock:
            st = _states.setdefault(dev, st)
    return st


def _prepared(st: _State, p: LtGemm) -> _Prepared:
    prep = st.prepared.get(p)
    if prep is None:
        prep = _Prepared(_library(), st.handle, p)
        with _lock:
            prep = st.prepared.setdefault(p, prep)
    return prep


_probe: dict[int, bool] = {}


def _epilogue_probe(dev: int) -> bool:
    """Once per device: does this library compute ``relu(x·wᵀ + r + b)`` as the IR means it (the
    residual before the ReLU, the bias along the output channels)? A small random GEMM is checked
    against numpy; where it disagrees, every layer keeps the two-pass path, with a warning."""
    import warnings

    import cupy

    ok = _probe.get(dev)
    if ok is None:
        rng = np.random.default_rng(dev)
        m, n, k = 48, 32, 64
        host = [rng.uniform(-1, 1, s).astype(np.float16) for s in ((m, k), (n, k), (m, n))]
        b = rng.uniform(-1, 1, n).astype(np.float32)
        x, w, r = (cupy.asarray(a) for a in host)
        y = cupy.empty((m, n), cupy.float16)
        _probe[dev] = False  # try_gemm below must not recurse into the probe
        ran = try_gemm(LtGemm(m, n, k, 1, True, True), x, w, cupy.asarray(b), y, r, _probing=True)
        want = np.maximum(host[0].astype(np.float64) @ host[1].astype(np.float64).T + host[2] + b, 0.0)
        got = cupy.asnumpy(y).astype(np.float64) if ran else None
        ok = got is not None and bool(np.allclose(got, want, rtol=1e-2, atol=1e-2))
        if ran and not ok:
            warnings.warn("cuBLASLt's fused epilogue disagrees with the reference on this GPU; "
                          "GEMM-shaped convolutions keep the two-pass cuBLAS path", RuntimeWarning, stacklevel=2)
        _probe[dev] = ok
    return ok


def _aligned(*arrays: Any) -> bool:
    return all(a is None or a.data.ptr % ALIGN == 0 for a in arrays)


def try_gemm(p: LtGemm, x: Any, w: Any, bias: Any, y: Any, res: Any = None, _probing: bool = False) -> bool:
    """Enqueue ``p`` on the current stream as one fused cuBLASLt call and return True, or return
    False (nothing enqueued) where the library, an algorithm or the alignment is missing, or where
    the device's epilogue probe failed. The first call on a device runs the probe (a host
    synchronization): it must not be inside a stream capture, as a runtime's first run is not."""
    if not fusable(p.act) or not available() or not _aligned(x, w, bias, y, res):
        return False
    import cupy

    if not _probing and not _epilogue_probe(cupy.cuda.runtime.getDevice()):
        return False
    st = _state()
    prep = _prepared(st, p)
    if not prep.ok:
        return False
    stream = cupy.cuda.get_current_stream().ptr
    ws = st.workspaces.get(stream)
    if ws is None:
        ws = st.workspaces.setdefault(stream, cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8))
    lib, vp = _library(), ctypes.c_void_p
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(1.0 if res is not None else 0.0)
    c = res if res is not None else y
    lay = prep.layout
    with prep.lock:  # the bias pointer lives in the shared descriptor until the call has read it
        if p.bias:
            _set(lib.cublasLtMatmulDescSetAttribute, prep.desc, DESC_BIAS_POINTER, vp(bias.data.ptr))
        status = lib.cublasLtMatmul(
            st.handle, prep.desc, ctypes.byref(alpha), vp(w.data.ptr), lay["A"], vp(x.data.ptr), lay["B"],
            ctypes.byref(beta), vp(c.data.ptr), lay["D"], vp(y.data.ptr), lay["D"],
            ctypes.byref(prep.result), vp(ws.data.ptr), WORKSPACE_BYTES, vp(stream))
    _check(status, "Matmul")
    return True

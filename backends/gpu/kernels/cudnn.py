"""cuDNN convolutions with the bias, the residual and a ReLU fused: one call of
``cudnnConvolutionBiasActivationForward``, ``y = act(conv(x, w) + z + bias)`` (cuDNN API reference).

Why: TensorRT's builder times the kernels of several tactic sources (its own, cuBLAS, cuBLASLt,
cuDNN) for each layer and keeps the fastest; hetrt's builder does the same with its implicit-GEMM
tiles, cuBLAS and cuBLASLt, and with this module cuDNN's convolutions, where the library is
installed. Nothing depends on it: without ``libcudnn`` the tactic is simply not timed, and a plan
that chose it runs the tiles' heuristic tactic on a machine without it (as a Hopper plan's wgmma
tactics do on an older GPU).

Layouts: hetrt's FP16 activations are NHWC with the channels padded to 8 (``Cp``), its weights
KRSC with ``Cp`` (or, grouped, each group's KRSC block in group order, which is cuDNN's NHWC filter
with a group count): both are cuDNN's NHWC tensors as they are. Data half, compute float (fp32
accumulation as the tiles), tensor-core math. The bias has the output's type (fp16, K of it), as for
cuBLASLt. The residual is ``z`` with ``alpha2 = 1``; without one, ``z`` is ``y`` with ``alpha2 = 0``.

The library: ``libcudnn.so.9`` on the loader's path, else in a ``nvidia/cudnn/lib`` folder of an
installed ``nvidia-cudnn-cu12`` / ``-cu13`` wheel (PyTorch's dependency). One handle per device, whose
stream is set before each call under a lock (a CUDA graph captures the call on that stream); the workspace is
the stream's shared one (``cuda_lib``). The algorithm is part of the tactic's name (``cudnn_a1``):
the builder times every algorithm cuDNN's heuristic offers within the workspace.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.gpu.kernels.cuda_lib import WORKSPACE_BYTES, LazyLibrary, stream_workspace
from engine.ir.errors import ExecutionError

DATA_FLOAT, DATA_HALF = 0, 2
TENSOR_NCHW, TENSOR_NHWC = 0, 1
CROSS_CORRELATION = 1
TENSOR_OP_MATH = 1
ACTIVATION_RELU, ACTIVATION_IDENTITY = 1, 5
PROPAGATE_NAN = 1
# activation code (backends/gpu/activations.py) -> cuDNN's mode in the fused call
ACTIVATIONS = {0: ACTIVATION_IDENTITY, 1: ACTIVATION_RELU}
ALGO_COUNT = 8  # cudnnConvolutionFwdAlgo_t
TACTIC_PREFIX = "cudnn_a"


class _AlgoPerf(ctypes.Structure):  # cudnnConvolutionFwdAlgoPerf_t
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int), ("math_type", ctypes.c_int),
                ("reserved", ctypes.c_int * 3)]


def _open() -> Any:
    """``libcudnn.so.9`` from the loader's path, else from an installed NVIDIA wheel's folder."""
    try:
        return ctypes.CDLL("libcudnn.so.9")
    except OSError as e:
        error = str(e)
    for root in sys.path:
        for lib in (Path(root) / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9",
                    Path(root) / "nvidia" / "cu13" / "lib" / "libcudnn.so.9"):
            if lib.is_file():
                return ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    raise OSError(f"{error}; no nvidia/cudnn/lib/libcudnn.so.9 under sys.path")


def _declare(lib: Any) -> None:
    vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.cudnnGetVersion.restype = sz
    lib.cudnnGetErrorString.restype = ctypes.c_char_p
    lib.cudnnGetErrorString.argtypes = [i]
    for fn in ("cudnnCreate", "cudnnCreateTensorDescriptor", "cudnnCreateFilterDescriptor",
               "cudnnCreateConvolutionDescriptor", "cudnnCreateActivationDescriptor"):
        getattr(lib, fn).argtypes = [ctypes.POINTER(vp)]
    lib.cudnnSetStream.argtypes = [vp, vp]
    lib.cudnnSetTensor4dDescriptor.argtypes = [vp, i, i, i, i, i, i]
    lib.cudnnSetFilter4dDescriptor.argtypes = [vp, i, i, i, i, i, i]
    lib.cudnnSetConvolution2dDescriptor.argtypes = [vp, i, i, i, i, i, i, i, i]
    lib.cudnnSetConvolutionMathType.argtypes = [vp, i]
    lib.cudnnSetConvolutionGroupCount.argtypes = [vp, i]
    lib.cudnnSetActivationDescriptor.argtypes = [vp, i, i, ctypes.c_double]
    lib.cudnnGetConvolutionForwardAlgorithm_v7.argtypes = [vp, vp, vp, vp, vp, i, ctypes.POINTER(i),
                                                           ctypes.POINTER(_AlgoPerf)]
    lib.cudnnGetConvolutionForwardWorkspaceSize.argtypes = [vp, vp, vp, vp, vp, i, ctypes.POINTER(sz)]
    lib.cudnnConvolutionBiasActivationForward.argtypes = [vp, vp, vp, vp, vp, vp, vp, i, vp, sz, vp, vp, vp, vp, vp,
                                                          vp, vp, vp]


LIBRARY = LazyLibrary("cudnn", "cuDNN", _declare, opener=_open)
_library = LIBRARY.get
available = LIBRARY.available
_lock = threading.Lock()  # the handles (their streams) and the plans
_handles: dict[int, ctypes.c_void_p] = {}  # per device: a cuDNN handle belongs to the device current at its creation


def _check(status: int, what: str) -> None:
    if status != 0:
        name = _library().cudnnGetErrorString(status).decode(errors="replace")
        raise ExecutionError(f"cuDNN {what} failed: {name} ({status})")


def _make(fn: str) -> ctypes.c_void_p:
    out = ctypes.c_void_p()
    _check(getattr(_library(), fn)(ctypes.byref(out)), fn)
    return out


def _device() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDevice())


def _cudnn_handle() -> ctypes.c_void_p:
    """The current device's handle (made on first use; the caller holds ``_lock``)."""
    device = _device()
    if device not in _handles:
        _handles[device] = _make("cudnnCreate")
    return _handles[device]


@dataclass(frozen=True)
class ConvShape:
    """What a cuDNN plan depends on: the geometry's sizes (hetrt's ConvGeometry, NHWC with Cp input
    channels and K output channels) and the activation code."""

    n: int
    h: int
    w: int
    cp: int
    k: int
    r: int
    s: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    p: int
    q: int
    act: int


@dataclass
class Plan:
    """The descriptors of one fused convolution, and the algorithms cuDNN's heuristic offers for it
    within the workspace (best first)."""

    x: ctypes.c_void_p
    w: ctypes.c_void_p
    y: ctypes.c_void_p
    bias: ctypes.c_void_p
    conv: ctypes.c_void_p
    act: ctypes.c_void_p
    algos: tuple[int, ...]


def shape_of(g: Any, act_code: int) -> ConvShape | None:
    """The cuDNN view of a hetrt convolution geometry, or None where the fused call cannot take it:
    another activation, uneven padding, or output channels that are not a multiple of 8 (the
    padded channels of hetrt's NHWC output must stay zero)."""
    if act_code not in ACTIVATIONS or (g.pad_end is not None and tuple(g.pad_end) != tuple(g.pad)) or g.k % 8:
        return None
    return ConvShape(g.n, g.h, g.w, g.cp if g.groups == 1 else g.c, g.k, g.r, g.s, tuple(g.stride), tuple(g.pad),
                     tuple(g.dilation), g.groups, g.p, g.q, act_code)


def _plan(s: ConvShape) -> Plan | None:
    lib = _library()
    x, w, y, bias = (_make("cudnnCreateTensorDescriptor"), _make("cudnnCreateFilterDescriptor"),
                     _make("cudnnCreateTensorDescriptor"), _make("cudnnCreateTensorDescriptor"))
    conv, act = _make("cudnnCreateConvolutionDescriptor"), _make("cudnnCreateActivationDescriptor")
    _check(lib.cudnnSetTensor4dDescriptor(x, TENSOR_NHWC, DATA_HALF, s.n, s.cp, s.h, s.w), "SetTensor4dDescriptor(x)")
    _check(lib.cudnnSetFilter4dDescriptor(w, DATA_HALF, TENSOR_NHWC, s.k, s.cp // s.groups, s.r, s.s),
           "SetFilter4dDescriptor")
    _check(lib.cudnnSetTensor4dDescriptor(y, TENSOR_NHWC, DATA_HALF, s.n, s.k, s.p, s.q), "SetTensor4dDescriptor(y)")
    _check(lib.cudnnSetTensor4dDescriptor(bias, TENSOR_NCHW, DATA_HALF, 1, s.k, 1, 1), "SetTensor4dDescriptor(bias)")
    _check(lib.cudnnSetConvolution2dDescriptor(conv, *s.pad, *s.stride, *s.dilation, CROSS_CORRELATION, DATA_FLOAT),
           "SetConvolution2dDescriptor")
    _check(lib.cudnnSetConvolutionMathType(conv, TENSOR_OP_MATH), "SetConvolutionMathType")
    if s.groups > 1:
        _check(lib.cudnnSetConvolutionGroupCount(conv, s.groups), "SetConvolutionGroupCount")
    _check(lib.cudnnSetActivationDescriptor(act, ACTIVATIONS[s.act], PROPAGATE_NAN, 0.0), "SetActivationDescriptor")
    perf, count = (_AlgoPerf * ALGO_COUNT)(), ctypes.c_int(0)
    status = lib.cudnnGetConvolutionForwardAlgorithm_v7(_cudnn_handle(), x, w, conv, y, ALGO_COUNT,
                                                        ctypes.byref(count), perf)
    if status != 0:
        return None
    algos = []
    for p in perf[:count.value]:
        need = ctypes.c_size_t(0)
        if p.status != 0 or lib.cudnnGetConvolutionForwardWorkspaceSize(
                _cudnn_handle(), x, w, conv, y, p.algo, ctypes.byref(need)) != 0:
            continue
        # the fused call takes an identity activation with the precomputed implicit GEMM only
        if need.value <= WORKSPACE_BYTES and (s.act != 0 or p.algo == 1) and p.algo not in algos:
            algos.append(p.algo)
    return Plan(x, w, y, bias, conv, act, tuple(algos)) if algos else None


_plans: dict[tuple[int, ConvShape], Plan | None] = {}


def plan_for(s: ConvShape) -> Plan | None:
    """The descriptors of ``s`` and the current device's algorithms for them (made once per device,
    then shared: descriptors are read-only once set)."""
    with _lock:
        key = (_device(), s)
        if key not in _plans:
            _plans[key] = _plan(s)
        return _plans[key]


def algorithms(g: Any, act_code: int) -> tuple[int, ...]:
    """The algorithms the fused call may run for this geometry here; () without cuDNN or a plan."""
    s = shape_of(g, act_code)
    if s is None or not available():
        return ()
    p = plan_for(s)
    return p.algos if p is not None else ()


def tactic_name(algo: int) -> str:
    return f"{TACTIC_PREFIX}{algo}"


def parse_tactic(name: Any) -> int | None:
    """The algorithm of a ``cudnn_a<algo>`` tactic name; None for any other name."""
    if not isinstance(name, str) or not name.startswith(TACTIC_PREFIX):
        return None
    digits = name[len(TACTIC_PREFIX):]
    return int(digits) if digits.isdigit() and len(digits) == 1 and int(digits) < ALGO_COUNT else None


def conv(x: Any, w: Any, bias: Any, y: Any, g: Any, act_code: int, algo: int, residual: Any = None) -> None:
    """Enqueue y = act(conv(x, w) + bias + residual) on the current stream with ``algo``: fp16 x
    (N, H, W, Cp), w KRSC, bias (K,) fp16, y and residual (N, P, Q, K)."""
    import cupy

    s = shape_of(g, act_code)
    p = plan_for(s) if s is not None else None
    if p is None or algo not in p.algos:
        raise ExecutionError(f"cuDNN has no algorithm {algo} for the fused convolution {g} (activation {act_code})")
    ws = stream_workspace()
    one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
    vp = ctypes.c_void_p
    z = residual if residual is not None else y
    lib = _library()
    with _lock:
        handle = _cudnn_handle()
        _check(lib.cudnnSetStream(handle, vp(cupy.cuda.get_current_stream().ptr)), "SetStream")
        _check(lib.cudnnConvolutionBiasActivationForward(
            handle, ctypes.byref(one), p.x, vp(x.data.ptr), p.w, vp(w.data.ptr), p.conv, algo, vp(ws.data.ptr),
            WORKSPACE_BYTES, ctypes.byref(one if residual is not None else zero), p.y, vp(z.data.ptr), p.bias,
            vp(bias.data.ptr), p.act, p.y, vp(y.data.ptr)), f"ConvolutionBiasActivationForward (algorithm {algo})")


def version() -> int:
    """cuDNN's version number (e.g. 92400), or 0 where it is not available."""
    return int(_library().cudnnGetVersion()) if available() else 0

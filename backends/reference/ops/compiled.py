"""The optional compiled fast path of the reference backend (``pip install hetrt[fast]``).

With numba installed, depthwise convolutions (with their bias and ReLU / clip / sigmoid / SiLU
epilogue fused into the same pass) and the sigmoid / SiLU epilogues of the other convolutions run
as compiled float32 loops (``jit_kernels``); the numpy path stays the reference and the fallback.
numba is imported on first use, never at import time. Every entry point returns None when it
does not apply, when numba is missing, when ``HETRT_NO_JIT=1``, or after any compilation or
runtime failure of the compiled code (reported once, as a warning): the caller then computes
the same thing with numpy.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import numpy as np

from engine.ir.layers import ActivationSpec, ActivationType

from . import channels_last

# None: not tried yet; False: unavailable (missing, disabled or failed); else the kernels module.
_STATE: ModuleType | bool | None = None

_ACT_CODES = {ActivationType.RELU: 1, ActivationType.CLIP: 2, ActivationType.SIGMOID: 3, ActivationType.SILU: 4}


def disabled_by_env() -> bool:
    """Whether ``HETRT_NO_JIT`` asks for the numpy path (any value but empty or 0)."""
    return os.environ.get("HETRT_NO_JIT", "").strip() not in ("", "0")


def reset() -> None:
    """Forget whether the compiled path is available (tests switch it on and off)."""
    global _STATE
    _STATE = None
    _WARM.clear()


def force_numpy(on: bool) -> None:
    """Use the numpy path even where numba is installed (``on``), or decide afresh (benchmarks
    time both paths side by side)."""
    global _STATE
    if on:
        _STATE = False
    else:
        reset()


def _disable(err: BaseException) -> None:
    global _STATE
    _STATE = False
    warnings.warn(f"hetrt: the compiled reference kernels failed ({type(err).__name__}: {err}); "
                  "using the numpy path", RuntimeWarning, stacklevel=3)


def kernels() -> ModuleType | None:
    """The compiled kernels module, or None when the numpy path must be used."""
    global _STATE
    if _STATE is None:
        _STATE = False
        if not disabled_by_env():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    # by name, through sys.modules: the module is re-imported if it was dropped
                    _STATE = importlib.import_module(f"{__package__}.jit_kernels")
            except ImportError:
                pass  # numba is optional
            except Exception as err:  # a broken numba/llvmlite install: fall back, say so once
                _disable(err)
    return _STATE or None


def enabled() -> bool:
    """Whether the compiled path is on (numba importable and not disabled)."""
    return kernels() is not None


# Kernels called once already: compiled (or loaded from the cache) for the one signature the
# wrappers below pass, so later calls skip the warnings guard.
_WARM: set[str] = set()


def _call(fn, *args) -> bool:
    """``fn(*args)``; False (and the compiled path disabled for good) if it raised."""
    try:
        if fn.__name__ in _WARM:
            fn(*args)
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's cache warnings on a read-only install
            fn(*args)
        _WARM.add(fn.__name__)
        return True
    except Exception as err:
        _disable(err)
        return False


def act_code(act: ActivationSpec | None) -> tuple[int, np.float32, np.float32] | None:
    """(kernel code, lo, hi) of an activation the kernels fuse (identity for None), else None."""
    if act is None:
        return 0, np.float32(0), np.float32(0)
    code = _ACT_CODES.get(ActivationType(act.type))
    if code is None:
        return None
    return code, np.float32(act.alpha), np.float32(act.beta)


def _bordered_source(x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """(C-contiguous (N, rows, W, C) buffer, first image row) holding the (N, C, H, W) array ``x``
    in place: its own NHWC memory, or the ``row_bordered`` buffer it is the interior of."""
    xh = x.transpose(0, 2, 3, 1)
    if xh.flags.c_contiguous:
        return xh, 0
    base = x.base
    n, c, h, w = x.shape
    b = channels_last.ROW_BORDER
    if (isinstance(base, np.ndarray) and base.dtype == x.dtype and base.flags.c_contiguous
            and base.shape == (n, h + 2 * b, w, c) and xh.strides == base.strides
            and xh.__array_interface__["data"][0] == base.__array_interface__["data"][0] + b * base.strides[1]):
        return base, b
    return None


def depthwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, act: ActivationSpec | None,
              stride, pre, post, dilation, out) -> tuple[np.ndarray, bool] | None:
    """A float32 2-D depthwise convolution with its bias (and activation, when fusable) applied,
    as an (N, C, Ho, Wo) channels-last array, and whether the activation was applied; None when
    the compiled path is off or does not cover this case (then nothing was computed)."""
    k = kernels()
    if (k is None or x.ndim != 4 or x.dtype != np.float32 or w.dtype != np.float32 or tuple(dilation) != (1, 1)
            or min(*pre, *post) < 0 or (bias is not None and bias.dtype != np.float32)):
        return None
    n, c, h, wd = x.shape
    src = _bordered_source(x)
    if src is None:
        src = (np.ascontiguousarray(x.transpose(0, 2, 3, 1)), 0)
    code = act_code(act)
    fused = code is not None
    kind, lo, hi = code if fused else (0, np.float32(0), np.float32(0))
    b = np.ascontiguousarray(bias) if bias is not None else np.zeros(c, dtype=np.float32)
    y = np.empty((n, out[0], out[1], c), dtype=np.float32)
    taps = channels_last.prepared(w, ("dw-jit",), lambda a: a.reshape(c, *a.shape[2:]).transpose(1, 2, 0))
    ok = _call(k.depthwise, src[0], src[1], h, taps, b, stride[0], stride[1], pre[0], pre[1], y, kind, lo, hi)
    if not ok:
        return None
    return channels_last.from_nhwc(y), fused


def bias_activate_rows(y: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, act: ActivationSpec | None) -> bool:
    """act(y + bias) in place for a float32 channels-last (N, K, H, W) ``y`` whose images are each
    contiguous (``rows``: its ``channels_last.nhwc_rows`` view); False (``y`` untouched) when the
    compiled path is off or does not cover it."""
    k = kernels()
    code = act_code(act)
    if k is None or code is None or y.dtype != np.float32 or y.ndim != 4 or (bias is None and act is None):
        return False
    if bias is not None and (bias.dtype != np.float32 or bias.shape != (y.shape[1],)):
        return False
    if any(not r.flags.c_contiguous for r in rows):
        return False
    kind, lo, hi = code
    ch = y.shape[1]
    for r in rows:
        flat = r.reshape(-1)  # a view: the image is contiguous
        ok = (_call(k.bias_activate, flat.reshape(-1, ch), flat, bias, kind, lo, hi) if bias is not None
              else _call(k.activate, flat, kind, lo, hi))
        if not ok:
            return False
    return True


def activate_inplace(y: np.ndarray, act: ActivationSpec) -> bool:
    """A fusable activation applied in place to a C-contiguous float32 array; False (``y``
    untouched) when the compiled path is off or does not cover it."""
    k = kernels()
    code = act_code(act)
    if k is None or code is None or act is None or y.dtype != np.float32 or not y.flags.c_contiguous:
        return False
    return _call(k.activate, y.reshape(-1), *code)

"""INT8 rules every backend shares: which fused epilogues and which poolings have integer forms.

Written once here so that the builder's INT8 assignment and the reference, GPU and DLA lowerings
cannot disagree. A clip must be clip(0, β) with β > 0: clip(0, 0) would be a constant and β < 0 an
empty range, neither of which a requantizing epilogue (ReLU, then a saturating clamp) computes.

Two epilogues are linear integer steps (ReLU, clip(0, β): :func:`epilogue`); two are non-linear
(SiLU and hard-swish: :func:`nonlinear_epilogue`). A non-linear INT8 epilogue is defined as the
correctly rounded quantization of the exact function of the dequantized accumulator:
``q = sat8(round_half_even(f(v * s_acc) / s_out))`` with ``v`` the int32 value after bias (and
residual), ``f`` evaluated in float64 (:func:`activation_value`). This is what an ideal INT8 kernel
computes, not what a particular lookup table computes: TensorRT's DLA runs an INT8 network's Sigmoid
in FP16 ([TRTDOC] "Sigmoid/TanH in INT8 auto-upgraded to FP16"), so no table is TensorRT's definition.
Backends whose arithmetic differs (the DLA's LUT and element-wise passes) state their distance to it.
"""

from __future__ import annotations

import numpy as np

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ActivationSpec, ActivationType, PoolingType

NONLINEAR = (ActivationType.SILU, ActivationType.HARD_SWISH)


def epilogue_reason(act: ActivationSpec | None) -> str | None:
    """None when ``act`` (a fused activation, or None) has an INT8 epilogue, else why not."""
    if act is None or act.type is ActivationType.RELU or act.type in NONLINEAR:
        return None
    if act.type is ActivationType.CLIP and act.alpha == 0.0 and act.beta > 0:
        return None
    return (f"fused activation {act.type.value} has no INT8 epilogue (ReLU, clip(0, max > 0), SiLU and "
            f"hard-swish do)")


def nonlinear_epilogue(act: ActivationSpec | None) -> ActivationType | None:
    """The non-linear INT8 epilogue of ``act`` (SiLU, hard-swish), or None for a linear one."""
    return act.type if act is not None and act.type in NONLINEAR else None


def epilogue(act: ActivationSpec | None) -> tuple[bool, float | None]:
    """(relu, clip_hi) of a linear INT8 epilogue; UnsupportedError when ``act`` has none (a
    non-linear one included: see :func:`nonlinear_epilogue`)."""
    why = epilogue_reason(act)
    if why is None and nonlinear_epilogue(act) is not None:
        why = (f"fused activation {act.type.value} is a non-linear INT8 epilogue (int8_rules.nonlinear_epilogue), "
               f"not a ReLU/clip step")
    if why is not None:
        raise UnsupportedError(why)
    if act is None:
        return False, None
    if act.type is ActivationType.RELU:
        return True, None
    return True, float(act.beta)


def activation_value(kind: ActivationType, x: np.ndarray) -> np.ndarray:
    """The exact real function of a non-linear INT8 epilogue, in float64."""
    x = np.asarray(x, dtype=np.float64)
    if kind is ActivationType.SILU:
        # x / (1 + e^-x): no cancellation for x << 0, where x * (1 + tanh(x / 2)) / 2 loses up to
        # 1e-5 of the value; e^-x overflows to inf only where the result is -0 (< -709)
        with np.errstate(over="ignore"):
            return x / (1.0 + np.exp(-x))
    if kind is ActivationType.HARD_SWISH:
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    raise UnsupportedError(f"activation {kind.value} is not a non-linear INT8 epilogue")


def quantize_nonlinear(kind: ActivationType, v: np.ndarray, s_acc: np.ndarray, s_out: float | None) -> np.ndarray:
    """A non-linear epilogue on int32 values ``v`` in units ``s_acc`` (broadcast): int8 at ``s_out``
    (as int64), or the float32 value when the layer has no output scale (a float network output)."""
    y = activation_value(kind, np.asarray(v, dtype=np.float64) * s_acc)
    if s_out is None:
        return y.astype(np.float32)
    return np.clip(np.rint(y / np.float64(s_out)), -128, 127).astype(np.int64)


def pool_reason(params, rank: int) -> str | None:
    """None when a pooling layer with ``params`` on a rank-``rank`` input has an INT8 kernel."""
    p = params
    if rank != 4:
        return "INT8 pooling is 2-D only"
    if p.type not in (PoolingType.MAX, PoolingType.AVERAGE):
        return f"{p.type.value} pooling has no INT8 kernel"
    if p.ceil_mode or any(d != 1 for d in (p.dilation or ())):
        return "INT8 pooling without ceil_mode or dilation only"
    if p.type is PoolingType.AVERAGE and not p.global_pool and not p.count_include_pad \
            and any((p.pre_padding or ()) + (p.post_padding or ())):
        return "INT8 average pooling divides by the full window (padding excluded from the count is not)"
    return None

"""INT8 rules every backend shares: which fused epilogues and which poolings have integer forms.

Written once here so that the builder's INT8 assignment and the reference, GPU and DLA lowerings
cannot disagree. A clip must be clip(0, β) with β > 0: clip(0, 0) would be a constant and β < 0 an
empty range, neither of which a requantizing epilogue (ReLU, then a saturating clamp) computes.
"""

from __future__ import annotations

from engine.ir.errors import UnsupportedError
from engine.ir.layers import ActivationSpec, ActivationType, PoolingType


def epilogue_reason(act: ActivationSpec | None) -> str | None:
    """None when ``act`` (a fused activation, or None) has an INT8 epilogue, else why not."""
    if act is None or act.type is ActivationType.RELU:
        return None
    if act.type is ActivationType.CLIP and act.alpha == 0.0 and act.beta > 0:
        return None
    return f"fused activation {act.type.value} has no INT8 epilogue (ReLU and clip(0, max > 0) do)"


def epilogue(act: ActivationSpec | None) -> tuple[bool, float | None]:
    """(relu, clip_hi) of an INT8 epilogue; UnsupportedError when ``act`` has none."""
    why = epilogue_reason(act)
    if why is not None:
        raise UnsupportedError(why)
    if act is None:
        return False, None
    if act.type is ActivationType.RELU:
        return True, None
    return True, float(act.beta)


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

"""Hardware limits as data, and a checker that reports every violated one.

Register field widths of nv_full ([REG] nvdla/hw ``cmod/include/arnvdla.uh``; summarised in the
reference notes §4) are the origin of TensorRT's DLA layer limits ([TRTDOC]); programming-guide
rules ([PG] "Programming limitations") add the cross-field constraints. Each :class:`Limit` names
its range or allowed set and its source; :func:`check` returns one human-readable reason per
violation (all of them, not the first), :func:`require_within_limits` raises
:class:`DlaLimitError` with all reasons. Config feature flags (Winograd, batch, LUT, BDMA, RUBIK)
are checked against the :class:`~dla_sim.config.DlaConfig` the op runs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

__all__ = ["LIMITS", "DlaLimitError", "Limit", "check", "enforce", "require_within_limits"]


class DlaLimitError(ValueError):
    """An operation outside what the DLA hardware can be programmed to do."""


@dataclass(frozen=True)
class Limit:
    """A named range [lo, hi] or allowed set, with what it bounds and where the number comes from."""

    name: str
    what: str
    lo: int | None = None
    hi: int | None = None
    allowed: tuple[int, ...] | None = None
    source: str = ""

    def violation(self, value: int, shown: str | None = None) -> str | None:
        """The reason ``value`` violates this limit, or None."""
        s = shown if shown is not None else str(value)
        if self.allowed is not None and value not in self.allowed:
            return f"{self.what} {s} not in {{{', '.join(map(str, self.allowed))}}} ({self.source})"
        if self.hi is not None and value > self.hi:
            return f"{self.what} {s} exceeds {self.hi} ({self.source})"
        if self.lo is not None and value < self.lo:
            return f"{self.what} {s} below {self.lo} ({self.source})"
        return None


def _L(name: str, what: str, lo=None, hi=None, allowed=None, source="") -> Limit:
    return Limit(name, what, lo, hi, allowed, source)


LIMITS = MappingProxyType({
    lim.name: lim
    for lim in (
        _L("conv.kernel", "conv kernel", 1, 32, source="conv kernel ext field, 5 bits [REG]"),
        _L("conv.stride", "conv stride", 1, 8, source="conv stride field, 3 bits [REG]"),
        _L("conv.pad", "conv padding", 0, 31, source="zero-pad field, 5 bits [REG]"),
        _L("conv.dilation", "conv dilation", 1, 32, source="dilation field, 5 bits [REG]"),
        _L("cube.dim", "cube dimension", 1, 8192, source="W/H/C/K fields, 13 bits [REG]"),
        _L("conv.batch", "batch", 1, 32, source="batch field, 5 bits [REG]"),
        _L("conv.groups", "conv groups", 1, 8192, source="[TRTDOC] groups <= 8192"),
        _L("winograd.out", "Winograd output width/height", 8, None, source="[PG] Winograd: >= 8, divisible by 4"),
        _L("pdp.kernel", "pooling window", 1, 8, source="PDP kernel range 1-8 by design [IAS]"),
        _L("pdp.stride", "pooling stride", 1, 16, source="PDP stride field, 4 bits [REG]"),
        _L("pdp.pad", "pooling padding", 0, 7, source="PDP pad field, 3 bits [REG]"),
        _L("cdp.local_size", "LRN window", allowed=(3, 5, 7, 9), source="CDP normalz_len field [IAS]"),
        _L("sdp.alu_shift", "SDP ALU operand shift", 0, 63, source="SDP *_ALU_SHIFT_VALUE field, 6 bits [REG]"),
        _L("sdp.mul_shift", "SDP MUL truncate shift", 0, 255, source="SDP *_MUL_SHIFT_VALUE field, 8 bits [REG]"),
        _L("cvt.shift", "converter shift", 0, 63, source="converter truncate field, 6 bits (cmod sdp.h)"),
        _L("cvt.scale", "converter scale", -32768, 32767, source="converter scale, INT16 [PREC]"),
        _L("cvt.offset", "converter offset", -(2**31), 2**31 - 1, source="converter offset, INT32 [PREC]"),
        _L("rubik.stride", "RUBIK deconvolution stride", 1, 32, source="RUBIK deconv stride field, 5 bits [REG]"),
        _L("bdma.lines", "BDMA line repeat", 1, 2**24, source="BDMA line repeat field, 24 bits [REG]"),
        _L("bdma.surfaces", "BDMA surface repeat", 1, 2**24, source="BDMA surface repeat field, 24 bits [REG]"),
        _L("bdma.line_bytes", "BDMA line size", 32, 2**13 * 32, source="BDMA line size in 32-B units, 13 bits [REG]"),
    )
})


def _dim_checks(cube, label: str, out: list[str], batch: bool = True) -> None:
    lim = LIMITS["cube.dim"]
    for nm, v in (("W", cube.w), ("H", cube.h), ("C", cube.c)):
        r = lim.violation(v, f"{label} {nm}={v}")
        if r:
            out.append(r)
    if batch:
        r = LIMITS["conv.batch"].violation(cube.n, f"{label} N={cube.n}")
        if r:
            out.append(r)


def _pair(lim: Limit, vals: tuple[int, ...], sep: str = "×") -> list[str]:
    """One reason for a multi-valued field (kernel, stride...), showing all values."""
    shown = sep.join(map(str, vals))
    for v in vals:
        r = lim.violation(v, shown)
        if r:
            return [r]
    return []


def _first_violating(lim: Limit, values) -> int | None:
    """The first of ``values`` outside ``lim``'s range (vectorised: per-channel lists are long)."""
    v = np.asarray(values, dtype=np.int64).ravel()
    bad = np.zeros(v.shape, bool)
    if lim.lo is not None:
        bad |= v < lim.lo
    if lim.hi is not None:
        bad |= v > lim.hi
    if lim.allowed is not None:
        bad |= ~np.isin(v, lim.allowed)
    idx = np.flatnonzero(bad)
    return int(v[idx[0]]) if idx.size else None


def _requant_checks(rq, label: str, out: list[str]) -> None:
    if rq is None:
        return
    for lim, values, what in ((LIMITS["cvt.shift"], rq.shift, "shift"), (LIMITS["cvt.scale"], rq.scale, "scale")):
        bad = _first_violating(lim, values)
        if bad is not None:
            out.append(lim.violation(int(bad), f"{label} {what} {bad}"))
    r = LIMITS["cvt.offset"].violation(int(rq.offset), f"{label} offset {rq.offset}")
    if r:
        out.append(r)


def _check_conv(op, cfg) -> list[str]:
    out: list[str] = []
    r_, s_ = op.kernel
    out += _pair(LIMITS["conv.kernel"], (r_, s_))
    out += _pair(LIMITS["conv.stride"], tuple(op.stride))
    out += _pair(LIMITS["conv.dilation"], tuple(op.dilation))
    for side, p in zip(("top", "left", "bottom", "right"), op.pad):
        rr = LIMITS["conv.pad"].violation(p, f"{side}={p}")
        if rr:
            out.append(rr)
    t, lft, b, rt = op.pad
    if t >= r_ or b >= r_:
        out.append(f"conv padding top/bottom {t}/{b} must be < kernel height {r_} ([PG] padding < R)")
    if lft >= s_ or rt >= s_:
        out.append(f"conv padding left/right {lft}/{rt} must be < kernel width {s_} ([PG] padding < S)")
    _dim_checks(op.input, "input", out)
    _dim_checks(op.output, "output", out, batch=False)
    if op.input.n > cfg.conv.max_batch:
        out.append(f"batch {op.input.n} exceeds {cfg.conv.max_batch} on {cfg.name} (config max_batch [SPEC])")
    g = op.groups
    rr = LIMITS["conv.groups"].violation(g)
    if rr:
        out.append(rr)
    if g < 1 or op.input.c % max(g, 1) or op.output.c % max(g, 1):
        out.append(f"conv groups {g} must divide C={op.input.c} and K={op.output.c}")
    if op.mode == "winograd":
        if not cfg.conv.winograd:
            out.append(f"Winograd not available on {cfg.name} (config conv.winograd [SPEC])")
        if (r_, s_) != (3, 3) or tuple(op.stride) != (1, 1):
            out.append(f"Winograd needs a 3×3 kernel at stride 1, got {r_}×{s_} stride {op.stride} ([PG])")
        if tuple(op.dilation) != (1, 1) or g != 1:
            out.append("Winograd excludes dilation and groups ([PG] feature crossing)")
        if op.input.n != 1:
            out.append(f"Winograd excludes multi-batch, got N={op.input.n} ([PG] feature crossing)")
        if not 0 <= getattr(op, "pra_trunc", 0) <= 2:
            out.append(f"Winograd PRA truncate {op.pra_trunc} outside 0-2 ([HWARCH] PRA truncate field)")
        for nm, v in (("width", op.output.w), ("height", op.output.h)):
            if v < 8 or v % 4:
                out.append(f"Winograd output {nm} {v} must be >= 8 and divisible by 4 ([PG])")
    # image input also excludes multi-batch [PG]: an N-image op is N one-image layers (conv_core doc)
    if op.mode == "image" and tuple(op.dilation) != (1, 1):
        out.append("image input excludes dilation ([PG] feature crossing)")
    if getattr(op, "weight_memory", "dram") == "sram" and not cfg.mem.sram_bits:
        out.append(f"weights in SRAM but {cfg.name} has no SRAM interface (config mem.sram_bits)")
    if op.weight_compression and not cfg.conv.weight_compression:
        out.append(f"weight compression not available on {cfg.name} (config conv.weight_compression)")
    if op.sparse_2_4 and not cfg.conv.sparsity_2_4:
        out.append(f"2:4 structured sparsity not available on {cfg.name} (Orin only [FAQ])")
    if op.sparse_2_4 and op.input.c // g <= 64:
        out.append(f"2:4 sparsity needs C > 64, got C={op.input.c // g} ([FAQ])")
    _requant_checks(op.requant, "conv requant", out)
    return out


def _check_sdp(op, cfg) -> list[str]:
    out: list[str] = []
    _dim_checks(op.input, "input", out)
    if op.input.shape != op.output.shape:
        out.append(f"SDP input {op.input.shape} and output {op.output.shape} shapes differ")
    for nm in ("bias_shift", "scale_shift", "eltwise_shift", "prelu_shift"):
        v = int(getattr(op, nm, 0) or 0)
        lim = LIMITS["sdp.alu_shift" if nm == "bias_shift" else "sdp.mul_shift"]
        r = lim.violation(v, f"{nm} {v}")
        if r:
            out.append(r)
    if op.eltwise is not None and not cfg.post.sdp_eltwise:
        out.append(f"SDP element-wise not available on {cfg.name} (config post.sdp_eltwise [SPEC])")
    if op.activation in ("sigmoid", "tanh") and not cfg.post.sdp_lut:
        out.append(f"SDP LUT ({op.activation}) not available on {cfg.name} (config post.sdp_lut [SPEC])")
    if op.eltwise is not None and op.eltwise_input is not None and op.eltwise_input.c != op.input.c:
        out.append(f"element-wise operand C={op.eltwise_input.c} differs from input C={op.input.c}")
    _requant_checks(op.in_requant, "eltwise converter", out)
    _requant_checks(op.out_requant, "output converter", out)
    return out


def _check_pdp(op, cfg) -> list[str]:
    out: list[str] = []
    kh, kw = op.kernel
    out += _pair(LIMITS["pdp.kernel"], (kh, kw))
    out += _pair(LIMITS["pdp.stride"], tuple(op.stride))
    for side, p in zip(("top", "left", "bottom", "right"), op.pad):
        r = LIMITS["pdp.pad"].violation(p, f"{side}={p}")
        if r:
            out.append(r)
    t, lft, b, rt = op.pad
    if lft >= kw or rt >= kw or t >= kh or b >= kh:
        out.append(f"pooling padding {op.pad} must be < window {kh}×{kw} ([PG] PL/PR < kernel width)")
    _dim_checks(op.input, "input", out, batch=False)
    if op.mode not in ("max", "min", "avg"):
        out.append(f"pooling mode {op.mode!r} not in {{max, min, avg}} ([IAS])")
    if op.split_width < 1:
        out.append(f"PDP split_width {op.split_width} must be >= 1")
    return out


def _check_cdp(op, cfg) -> list[str]:
    out: list[str] = []
    r = LIMITS["cdp.local_size"].violation(op.local_size)
    if r:
        out.append(r)
    _dim_checks(op.input, "input", out, batch=False)
    if not cfg.post.sdp_lut and cfg.post.cdp <= 0:
        out.append(f"CDP not available on {cfg.name}")
    return out


def _check_rubik(op, cfg) -> list[str]:
    out: list[str] = []
    if not cfg.post.rubik:
        out.append(f"RUBIK not available on {cfg.name} (config post.rubik [SPEC])")
    _dim_checks(op.input, "input", out, batch=False)
    _dim_checks(op.output, "output", out, batch=False)
    if op.mode == "contract":
        sy, sx = op.stride
        out += _pair(LIMITS["rubik.stride"], (sy, sx))
        bpe = op.input.precision.bytes
        if (op.input.c * bpe) % (sy * sx * 32):
            out.append(
                f"RUBIK contract: C={op.input.c} x {bpe} B not divisible by stride_x*stride_y*32 B = "
                f"{sx * sy * 32} ([IAS] C % (sx*sy*32 B) == 0)"
            )
        if op.input.w * sx > 8192:
            out.append(f"RUBIK contract: output width {op.input.w * sx} exceeds 8192 ([PG])")
        if op.input.h * sy > 8192:
            out.append(f"RUBIK contract: output height {op.input.h * sy} exceeds 8192 ([IAS])")
    return out


def _check_bdma(op, cfg) -> list[str]:
    out: list[str] = []
    if not cfg.post.bdma:
        out.append(f"BDMA not available on {cfg.name} (config post.bdma [SPEC])")
    for key, v in (("bdma.lines", op.lines), ("bdma.surfaces", op.surfaces), ("bdma.line_bytes", op.line_bytes)):
        r = LIMITS[key].violation(v)
        if r:
            out.append(r)
    for nm in ("line_bytes", "src_line_stride", "dst_line_stride", "src_surface_stride", "dst_surface_stride"):
        v = getattr(op, nm)
        if v % 32:
            out.append(f"BDMA {nm} {v} B is not a multiple of 32 B ([PG] BDMA addresses 32-B aligned)")
    if "sram" in (op.src_memory, op.dst_memory) and not cfg.mem.sram_bits:
        out.append(f"BDMA to/from SRAM but {cfg.name} has no SRAM interface")
    return out


_CHECKERS = {"conv": _check_conv, "sdp": _check_sdp, "pdp": _check_pdp, "cdp": _check_cdp,
             "rubik": _check_rubik, "bdma": _check_bdma}


def check(op, cfg) -> list[str]:
    """Every limit ``op`` violates on ``cfg``, one reason each (empty list: within limits)."""
    fn = _CHECKERS.get(getattr(op, "unit", ""))
    if fn is None:
        raise NotImplementedError(f"no limit checker for unit {getattr(op, 'unit', None)!r}")
    return [r for r in fn(op, cfg) if r]


def require_within_limits(op, cfg) -> None:
    """Raise :class:`DlaLimitError` naming every violated limit and its value."""
    reasons = check(op, cfg)
    if reasons:
        raise DlaLimitError(f"{op.unit} op {op.name!r}: " + "; ".join(reasons))


enforce = require_within_limits

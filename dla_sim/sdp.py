"""SDP, the single-point data processor: bias, batch-norm scale, element-wise, ReLU/PReLU/clip,
LUT sigmoid/tanh and the output converter.

Sub-units ([IAS] "Single Point Data Processor"; cmod ``hls/sdp/sdp_x.cpp``, ``sdp_y*.cpp``,
``sdp_c.cpp``): X1 and X2 (ALU -> MUL -> ReLU each, 16 elem/cycle on nv_full), Y (MUL -> ALU ->
LUT, 4 elem/cycle), then the output converter C. An SdpOp is mapped onto them in a fixed way:

* X1 (BS):  ALU ``+ bias`` (operand << ``bias_shift``), MUL ``* scale`` (>> ``scale_shift``).
* X2 (BN):  ALU element-wise add/sub/max/min, or ``min(clip_max)`` for clip when there is no
            element-wise; MUL element-wise mul (>> ``eltwise_shift``), or PReLU when there is no
            element-wise (PReLU needs its sub-unit's ALU bypassed [IAS]); then ReLU (relu, clip).
* Y (EW):   only when needed: PReLU (MUL) / clip (ALU min) when X2 is busy with element-wise;
            the LUT for sigmoid/tanh ([IAS]: non-linear functions only in Y).
* C:        ``y = sat(round((x - offset) * scale >> shift))`` (``op.out_requant``).

INT pipeline (INT8 layers): input int32 from CACC (flying) or int8 from memory. Every sub-unit
result is rounded half away from zero and saturated to int32 (cmod ``IntShiftRight`` through
``ac_fixed<..., AC_RND_INF, AC_SAT>``); the converter saturates to the output precision. Bias/scale
operands are int16 (X operand width), the element-wise stream passes through the E-RDMA converter
``op.in_requant`` (``ew_cvt`` in [PREC]) to int32 [U: the doc places ew_cvt on the element-wise
stream; the cmod shows it in Y only]. FP16 pipeline: input float32 from CACC or fp16 from memory,
operands are fp16, all arithmetic in float32 (the hardware's fp32 path, round to nearest), output
rounded to fp16 with saturation to +-65504 (no INF [FMT]). FP16 -> INT8: the output is quantized at
``op.fp_out_scale`` (TensorRT's DLA runs INT8 networks whose Sigmoid/TanH it upgrades to FP16 and
hands on in INT8 [TRTDOC]; the YOLOv5 cuDLA INT8 build runs SiLU that way on Orin [YOLO]).

Timing: elements (channel-padded atoms) / the slowest sub-unit in use (X1 ``post.sdp_bs``, X2
``post.sdp_bn``, Y ``post.sdp_ew`` elements per cycle [SPEC]), against the bytes this op moves
itself over the memory interface: the input cube when off-line (M-RDMA), per-channel/per-element
operands, the element-wise cube, and the output (unless a flying PDP consumes it,
``op.write_output`` False). The slower of compute and memory wins.
"""

from __future__ import annotations

import numpy as np

from . import lut as L
from . import sdp_fast
from .formats import convert_int, rshift_round, saturate, to_fp16
from .limits import DlaLimitError, require_within_limits
from .ops import Precision, SdpOp, UnitTiming

__all__ = ["run", "timing", "units_used"]


def _opt(op: SdpOp, name: str, default):
    return getattr(op, name, default)


def units_used(op: SdpOp) -> tuple[str, ...]:
    """Which sub-units the op occupies (X1, X2, Y), following the mapping in the module doc."""
    used = []
    if op.bias != "none" or op.scale != "none":
        used.append("X1")
    x2 = op.eltwise is not None or op.activation in ("relu", "clip", "prelu")
    if x2:
        used.append("X2")
    if op.activation in ("sigmoid", "tanh") or (op.eltwise is not None and op.activation in ("prelu", "clip")):
        used.append("Y")
    return tuple(used)


def _operand(a: np.ndarray, mode: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    a = np.asarray(a)
    n, c, h, w = shape
    if mode == "per_layer":
        if a.size != 1:
            raise ValueError(f"{what}: per_layer operand must be one value, got shape {a.shape}")
        return a.reshape(1, 1, 1, 1)
    if mode == "per_channel":
        if a.size != c:
            raise ValueError(f"{what}: per_channel operand needs {c} values, got shape {a.shape}")
        return a.reshape(1, c, 1, 1)
    if mode == "per_element":
        if a.shape not in ((c, h, w), (1, c, h, w), (n, c, h, w)):
            raise ValueError(f"{what}: per_element operand shape {a.shape} does not match {shape}")
        return a.reshape((-1, c, h, w))
    raise ValueError(f"{what}: unknown operand mode {mode!r}")


def _int16(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "f" and np.any(a != np.round(a)):
        raise DlaLimitError(f"{what}: INT pipeline operand must be integer")
    a = a.astype(np.int64)
    if a.size and (a.min() < -32768 or a.max() > 32767):
        raise DlaLimitError(f"{what}: value {int(a.flat[np.argmax(np.abs(a))])} exceeds the int16 operand (16 bits)")
    return a


def _split_operands(op: SdpOp, operands: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    names = []
    if op.bias != "none":
        names.append("bias")
    if op.scale != "none":
        names.append("scale")
    if op.eltwise is not None:
        names.append("eltwise")
    if op.activation == "prelu" and op.prelu_slope is None:
        names.append("prelu")
    if len(operands) != len(names):
        raise ValueError(f"SDP {op.name!r} expects operands {names}, got {len(operands)} arrays")
    return dict(zip(names, operands))


def _check_features(op: SdpOp, cfg) -> None:
    post = cfg.post
    if op.eltwise is not None and not post.sdp_eltwise:
        raise DlaLimitError(f"element-wise {op.eltwise} not available on {cfg.name} (SDP EW disabled in spec)")
    if op.activation in ("sigmoid", "tanh") and not post.sdp_lut:
        raise DlaLimitError(f"{op.activation} needs the SDP LUT, not present on {cfg.name}")
    if op.activation == "clip" and op.clip_max is None:
        raise ValueError("clip activation needs clip_max")
    if op.input.precision is Precision.FP16 and op.output.precision is Precision.INT8 and op.fp_out_scale is None:
        raise DlaLimitError("SDP FP16 -> INT8 output needs the converter's quantization step (fp_out_scale)")


def _run_int(op: SdpOp, x: np.ndarray, ops: dict[str, np.ndarray]) -> np.ndarray:
    """The INT pipeline: :mod:`dla_sim.sdp_fast` where it proves its bounds, else the int64 chain."""
    if sdp_fast.supported(op, ops):
        shape = np.shape(x)
        b = _int16(_operand(ops["bias"], op.bias, shape, "bias"), "bias") if "bias" in ops else None
        y = sdp_fast.run_int(op, np.asarray(x), ops, b)
        if y is not None:
            return y
    return _run_int_reference(op, x, ops)


def _run_int_reference(op: SdpOp, x: np.ndarray, ops: dict[str, np.ndarray]) -> np.ndarray:
    """Every sub-unit in int64, saturating after each, as the module doc states."""
    v = np.asarray(x).astype(np.int64)
    shape = v.shape
    c = shape[1]
    sat32 = lambda t: saturate(t, 32)  # noqa: E731
    # X1: ALU (+ bias << bias_shift) -> MUL (* scale >> scale_shift)
    if "bias" in ops:
        b = _int16(_operand(ops["bias"], op.bias, shape, "bias"), "bias")
        v = sat32(v + (b << int(op.bias_shift)))
    if "scale" in ops:
        s = _int16(_operand(ops["scale"], op.scale, shape, "scale"), "scale")
        v = sat32(rshift_round(v * s, int(op.scale_shift)))
    # X2: element-wise (operand through the E-RDMA converter), clip-min / PReLU if free, ReLU
    if op.eltwise is not None:
        e = np.asarray(ops["eltwise"]).astype(np.int64)
        if e.shape != shape and e.shape != (1, *shape[1:]):
            raise ValueError(f"eltwise operand shape {e.shape} does not match input {shape}")
        if op.in_requant is not None:
            sc, sh = op.in_requant.arrays(c)
            e = convert_int(e, op.in_requant.offset, sc.reshape(1, c, 1, 1), sh.reshape(1, c, 1, 1), 32)
        if op.eltwise == "add":
            v = sat32(v + e)
        elif op.eltwise == "sub":
            v = sat32(v - e)
        elif op.eltwise == "max":
            v = np.maximum(v, e)
        elif op.eltwise == "min":
            v = np.minimum(v, e)
        elif op.eltwise == "mul":
            v = sat32(rshift_round(v * e, int(op.eltwise_shift)))
        else:
            raise NotImplementedError(f"SDP element-wise {op.eltwise!r}")
    act = op.activation
    if act == "prelu":
        slope = ops.get("prelu")
        sl = _int16(
            _operand(slope if slope is not None else np.array([op.prelu_slope]),
                     "per_channel" if slope is not None else "per_layer", shape, "prelu slope"),
            "prelu slope",
        )
        neg = sat32(rshift_round(v * sl, int(op.prelu_shift)))
        v = np.where(v < 0, neg, v)
    if act in ("relu", "clip"):
        v = np.maximum(v, 0)
    if act == "clip":
        cm = float(op.clip_max)
        if cm != round(cm):
            raise DlaLimitError(f"clip_max {cm} must be an integer in the INT pipeline's internal domain")
        v = np.minimum(v, int(cm))
    if act in ("sigmoid", "tanh"):
        in_scale = op.lut_in_scale
        if in_scale is None:
            raise DlaLimitError(
                f"{act} in the INT pipeline needs lut_in_scale (LUT input LSB); TensorRT runs it in FP16"
            )
        build = L.sigmoid_lut(in_scale) if act == "sigmoid" else L.tanh_lut(in_scale)
        v = L.evaluate(build.lut, v, unit="sdp")
    # C: output converter
    out_p = op.output.precision
    rq = op.out_requant
    if rq is not None:
        sc, sh = rq.arrays(c)
        sc, sh = sc.reshape(1, c, 1, 1), sh.reshape(1, c, 1, 1)
    else:
        sc, sh = np.int64(1), np.int64(0)
    off = rq.offset if rq is not None else 0
    if out_p is Precision.FP16:
        t = convert_int(v, off, sc, sh, 17)  # truncate to 17 bits, then Int17ToFp16 (cmod sdp_c.cpp)
        return to_fp16(t)
    bits = 8 if out_p is Precision.INT8 else 16
    return convert_int(v, off, sc, sh, bits).astype(out_p.dtype)


def _run_fp(op: SdpOp, x: np.ndarray, ops: dict[str, np.ndarray]) -> np.ndarray:
    f32 = np.float32
    v = np.asarray(x).astype(f32)
    shape = v.shape

    def opnd(name: str, mode: str) -> np.ndarray:
        return _operand(np.asarray(ops[name]), mode, shape, name).astype(np.float16).astype(f32)

    if "bias" in ops:
        v = v + opnd("bias", op.bias)
    if "scale" in ops:
        v = v * opnd("scale", op.scale)
    if op.eltwise is not None:
        e = np.asarray(ops["eltwise"]).astype(np.float16).astype(f32)
        if e.shape != shape and e.shape != (1, *shape[1:]):
            raise ValueError(f"eltwise operand shape {e.shape} does not match input {shape}")
        fn = {"add": np.add, "sub": np.subtract, "max": np.maximum, "min": np.minimum, "mul": np.multiply}
        if op.eltwise not in fn:
            raise NotImplementedError(f"SDP element-wise {op.eltwise!r}")
        v = fn[op.eltwise](v, e).astype(f32)
    act = op.activation
    if act == "prelu":
        slope = ops.get("prelu")
        sl = _operand(slope if slope is not None else np.array([op.prelu_slope]),
                      "per_channel" if slope is not None else "per_layer", shape, "prelu slope")
        v = np.where(v < 0, v * sl.astype(np.float16).astype(f32), v)
    if act in ("relu", "clip"):
        v = np.maximum(v, f32(0))
    if act == "clip":
        v = np.minimum(v, f32(np.float16(op.clip_max)))
    if act in ("sigmoid", "tanh"):
        build = L.sigmoid_lut() if act == "sigmoid" else L.tanh_lut()
        v = L.evaluate(build.lut, v)
    if op.out_requant is not None:
        raise DlaLimitError("the SDP converter does not exist in the FP16 pipeline (precision doc converter table)")
    if op.output.precision is Precision.INT8:
        return _fp_to_int8(v, op.fp_out_scale)
    if op.output.precision is Precision.INT16:
        raise NotImplementedError("SDP FP16 -> INT16 output (Fp16ToInt16) is not modelled")
    return to_fp16(v)


def _fp_to_int8(v: np.ndarray, step: float) -> np.ndarray:
    """FP16 pipeline -> INT8 cube: ``sat(round_half_even(v / step))`` in fp32, TensorRT's quantize of
    a tensor at its calibrated scale [U: the DLA's rounding of this conversion is not published]."""
    with np.errstate(invalid="ignore", over="ignore"):
        q = np.rint(v.astype(np.float32) / np.float32(step))
    return np.clip(np.nan_to_num(q, nan=0.0), -128, 127).astype(np.int8)


def run(op: SdpOp, x: np.ndarray, *operands: np.ndarray, cfg) -> np.ndarray:
    """Execute ``op`` on NCHW ``x`` (int32/int8 for INT pipelines, float32/float16 for FP16)."""
    require_within_limits(op, cfg)
    _check_features(op, cfg)
    ops = _split_operands(op, operands)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"SDP input must be NCHW, got shape {x.shape}")
    if op.input.precision.is_int:
        if x.dtype.kind not in "iu":
            raise ValueError(f"INT SDP input must be an integer array, got {x.dtype}")
        return _run_int(op, x, ops)
    if x.dtype.kind != "f":
        raise ValueError(f"FP16 SDP input must be float16/float32, got {x.dtype}")
    return _run_fp(op, x, ops)


def _operand_bytes(mode: str, cube, bpe: int) -> int:
    if mode == "per_channel":
        return -(-cube.c * bpe // cube.atom_bytes) * cube.atom_bytes
    if mode == "per_element":
        return cube.n * cube.surfaces * cube.h * cube.w * cube.atom_bytes * max(1, bpe // cube.precision.bytes)
    return 0


def timing(op: SdpOp, cfg) -> UnitTiming:
    """Cycles = max(elements / slowest sub-unit throughput, bytes moved / interface bandwidth)."""
    require_within_limits(op, cfg)
    out = op.output
    elems = out.n * out.c_padded * out.h * out.w
    used = units_used(op)
    thr = {"X1": cfg.post.sdp_bs, "X2": cfg.post.sdp_bn, "Y": cfg.post.sdp_ew}
    rate = min((thr[u] for u in used), default=max(cfg.post.sdp_bs, cfg.post.sdp_bn))
    if rate <= 0:
        raise DlaLimitError(f"SDP sub-units {used} have no throughput on {cfg.name} (not in the spec)")
    compute = elems / rate
    rd = {"dram": 0, "sram": 0}
    wr = {"dram": 0, "sram": 0}
    notes = [f"sub-units {'+'.join(used) or 'converter only'} at {rate} elem/cycle"]
    if op.source == "memory":
        rd[op.input.memory] += op.input.payload_bytes
    # operands are 16-bit (INT: int16 X operands; FP16: fp16); BN packs scale+bias together [FMT]
    for mode in (op.bias, op.scale):
        rd["dram"] += _operand_bytes(mode, out, 2)
    if op.eltwise is not None:
        e = op.eltwise_input or op.input
        rd[e.memory] += e.payload_bytes
    if _opt(op, "write_output", True):
        wr[out.memory] += out.payload_bytes
    dram_c = (rd["dram"] + wr["dram"]) / cfg.dram_bytes_per_cycle()
    sram_r, sram_w = cfg.sram_bytes_per_cycle(False), cfg.sram_bytes_per_cycle(True)
    if (rd["sram"] and not sram_r) or (wr["sram"] and not sram_w):
        raise DlaLimitError(f"{cfg.name} has no SRAM interface, but SDP {op.name!r} uses SRAM")
    sram_c = (rd["sram"] / sram_r if rd["sram"] else 0.0) + (wr["sram"] / sram_w if wr["sram"] else 0.0)
    cycles = max(compute, dram_c, sram_c)
    return UnitTiming(
        unit="sdp",
        cycles=float(cycles),
        compute_cycles=float(compute),
        dram_read_bytes=int(rd["dram"]),
        dram_write_bytes=int(wr["dram"]),
        sram_read_bytes=int(rd["sram"]),
        sram_write_bytes=int(wr["sram"]),
        elem_ops=int(elems * max(1, len(used))),
        notes=tuple(notes),
    )

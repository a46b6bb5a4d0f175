"""Polygraphy-style output comparison: hetrt against ONNX Runtime (or stored outputs) on the same inputs.

Checks (``check_error_stat``):

* ``elemwise`` (default): every element satisfies ``|hetrt − ref| ≤ atol + rtol·|ref|``.
* ``max`` / ``mean`` / ``median``: that statistic of the absolute error is ``≤ atol``, or that
  statistic of the relative error is ``≤ rtol``.

When ``atol`` is not given it is ``atol_scale × max|ref|`` (see ``DEFAULT_TOLERANCES``), so the check
scales with the output's magnitude instead of failing on logits that sit near zero. Non-finite
values are validated first: an output passes only if its NaN and ±Inf elements are exactly where
the reference has them; error statistics cover the elements finite in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.ir.errors import HetrtError


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol_scale: float  # default atol = atol_scale * max|ref|

    def describe(self) -> str:
        return f"rtol {self.rtol:g}, atol {self.atol_scale:g}·max|ref|"


# Defaults per build precision (stated in `hetrt compare --help` and the README). FP32 kernels
# reorder sums only; FP16 keeps 10 mantissa bits with fp32 accumulation; INT8 has 8-bit activations, so
# an output element may be off by a few quantization steps of the largest value.
DEFAULT_TOLERANCES = {"fp32": Tolerance(1e-5, 1e-5), "fp16": Tolerance(1e-2, 1e-2), "int8": Tolerance(5e-2, 5e-2)}
DEFAULT_RTOL = {k: v.rtol for k, v in DEFAULT_TOLERANCES.items()}
ERROR_STATS = ("elemwise", "max", "mean", "median")


def describe_defaults() -> str:
    return "; ".join(f"{k}: {v.describe()}" for k, v in DEFAULT_TOLERANCES.items())


@dataclass
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    rtol: float
    atol: float
    check: str
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    worst_index: tuple[int, ...]
    required_atol: float
    required_rtol: float
    nonfinite_got: int
    nonfinite_ref: int
    nonfinite_mismatch: int
    passed: bool

    @property
    def finite_ok(self) -> bool:
        return self.nonfinite_mismatch == 0

    def report(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        lines = [f"Comparing output '{self.name}' shape {self.shape}",
                 f"    Tolerance: [abs={self.atol:.3g}, rel={self.rtol:.3g}] | Checking {self.check} error"]
        if self.nonfinite_got or self.nonfinite_ref:
            lines.append(f"    Non-finite values | hetrt: {self.nonfinite_got}, reference: {self.nonfinite_ref}, "
                         f"at different positions: {self.nonfinite_mismatch}")
        lines += [
            f"    Absolute difference | mean={self.mean_abs:.4g}, median={self.median_abs:.4g}, "
            f"max={self.max_abs:.4g} at {self.worst_index}",
            f"    Relative difference | mean={self.mean_rel:.4g}, median={self.median_rel:.4g}, max={self.max_rel:.4g}",
            f"    Minimum required tolerance: [abs={self.required_atol:.3g}] OR [rel={self.required_rtol:.3g}]",
        ]
        if not self.finite_ok:
            why = (f"{self.nonfinite_mismatch} element(s) are NaN/Inf in hetrt's output but not in the reference "
                   f"(or the reverse): the output is not finite where it should be")
        else:
            why = "difference is within tolerance" if self.passed else "difference exceeds tolerance"
        lines.append(f"    {status} | Output: '{self.name}' | {why}")
        return "\n".join(lines)


def _stat(values: np.ndarray, how: str) -> float:
    if values.size == 0:
        return 0.0
    return float({"max": np.max, "mean": np.mean, "median": np.median}[how](values))


def compare_arrays(name: str, got: np.ndarray, ref: np.ndarray, rtol: float, atol: float | None = None,
                   check: str = "elemwise", atol_scale: float | None = None) -> OutputComparison:
    """Compare one output; never raises on NaN/Inf (they are part of the verdict)."""
    if check not in ERROR_STATS:
        raise HetrtError(f"unknown error statistic '{check}'; use {', '.join(ERROR_STATS)}")
    if tuple(got.shape) != tuple(ref.shape):
        raise HetrtError(f"output '{name}': hetrt shape {tuple(got.shape)} != reference shape {tuple(ref.shape)}")
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    fin_g, fin_r = np.isfinite(g), np.isfinite(r)
    same_nonfinite = (~fin_g & ~fin_r) & ((np.isnan(g) & np.isnan(r)) | (g == r))
    mismatch = int(np.count_nonzero((~fin_g | ~fin_r) & ~same_nonfinite))
    both = fin_g & fin_r
    if atol is None:
        scale = rtol if atol_scale is None else atol_scale
        atol = scale * float(np.max(np.abs(r[fin_r]))) if fin_r.any() else scale
    with np.errstate(all="ignore"):  # Inf - Inf: masked out by ``both``
        diff = np.where(both, np.abs(g - r), 0.0)
        rel = np.where(both, diff / np.maximum(np.abs(r), np.finfo(np.float64).tiny), 0.0)
    d, q = diff[both], rel[both]
    if check == "elemwise":
        within = bool(np.all(d <= atol + rtol * np.abs(r[both])))
    else:
        within = _stat(d, check) <= atol or _stat(q, check) <= rtol
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    return OutputComparison(
        name=name, shape=tuple(got.shape), rtol=rtol, atol=atol, check=check,
        max_abs=_stat(d, "max"), mean_abs=_stat(d, "mean"), median_abs=_stat(d, "median"),
        max_rel=_stat(q, "max"), mean_rel=_stat(q, "mean"), median_rel=_stat(q, "median"),
        worst_index=tuple(int(i) for i in worst), required_atol=_stat(d, "max"), required_rtol=_stat(q, "max"),
        nonfinite_got=int(np.count_nonzero(~fin_g)), nonfinite_ref=int(np.count_nonzero(~fin_r)),
        nonfinite_mismatch=mismatch, passed=bool(within and mismatch == 0),
    )


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB over elements finite in both (inf when equal)."""
    r = np.asarray(ref, np.float64)
    g = np.asarray(got, np.float64)
    both = np.isfinite(r) & np.isfinite(g)
    noise = float(np.sum((g[both] - r[both]) ** 2))
    signal = float(np.sum(r[both] ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def _session(model_bytes: bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        raise HetrtError("this comparison needs onnxruntime as its oracle: pip install onnxruntime "
                         "(or pip install 'hetrt[test]')") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise HetrtError(f"ONNX Runtime cannot load the model: {str(e).splitlines()[0]}") from None


def onnxruntime_outputs(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the model on ONNX Runtime's CPU provider (the test oracle)."""
    session = _session(model_bytes)
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, feeds)))
    except Exception as e:
        raise HetrtError(f"ONNX Runtime failed to run the model: {str(e).splitlines()[0]}") from None


def mark_all_outputs(model):
    """A copy of ``model`` whose every typed intermediate tensor is also a graph output (Polygraphy's
    ``--onnx-outputs mark all``): ONNX Runtime then returns every layer's result."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = onnx.ModelProto()
    out.CopyFrom(inferred)
    present = {o.name for o in out.graph.output}
    for vi in list(inferred.graph.value_info):
        if vi.name not in present and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out.graph.output.append(vi)
            present.add(vi.name)
    return out


def onnxruntime_all_tensors(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return onnxruntime_outputs(mark_all_outputs(model).SerializeToString(), feeds)

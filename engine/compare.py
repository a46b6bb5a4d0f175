"""Polygraphy-style output comparison: hetrt against ONNX Runtime on the same inputs.

An output passes when every element satisfies |hetrt − ref| ≤ atol + rtol·|ref|. When ``atol``
is not given it is ``rtol × max|ref|``, so the check scales with the output's magnitude instead
of failing on logits that happen to sit near zero; the report states the values used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.ir.errors import HetrtError

DEFAULT_RTOL = {"fp32": 1e-5, "fp16": 1e-2}


@dataclass
class OutputComparison:
    name: str
    shape: tuple[int, ...]
    rtol: float
    atol: float
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    worst_index: tuple[int, ...]
    required_atol: float
    required_rtol: float
    passed: bool

    def report(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        return "\n".join([
            f"Comparing output '{self.name}' shape {self.shape}",
            f"    Tolerance: [abs={self.atol:.3g}, rel={self.rtol:.3g}] | Checking elemwise error",
            f"    Absolute difference | mean={self.mean_abs:.4g}, median={self.median_abs:.4g}, "
            f"max={self.max_abs:.4g} at {self.worst_index}",
            f"    Relative difference | mean={self.mean_rel:.4g}, max={self.max_rel:.4g}",
            f"    Minimum required tolerance: [abs={self.required_atol:.3g}] OR [rel={self.required_rtol:.3g}]",
            f"    {status} | Output: '{self.name}' | "
            + ("difference is within tolerance" if self.passed else "difference exceeds tolerance"),
        ])


def compare_arrays(name: str, got: np.ndarray, ref: np.ndarray, rtol: float,
                   atol: float | None = None) -> OutputComparison:
    if got.shape != ref.shape:
        raise HetrtError(f"output '{name}': hetrt shape {got.shape} != reference shape {ref.shape}")
    g = np.asarray(got, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if atol is None:
        atol = rtol * float(np.max(np.abs(r))) if r.size else rtol
    diff = np.abs(g - r)
    rel = diff / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    nan_mismatch = np.isnan(g) != np.isnan(r)
    ok = (diff <= atol + rtol * np.abs(r)) | (np.isnan(g) & np.isnan(r))
    worst = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.size else ()
    return OutputComparison(
        name=name, shape=tuple(got.shape), rtol=rtol, atol=atol,
        max_abs=float(np.nanmax(diff)) if diff.size else 0.0,
        mean_abs=float(np.nanmean(diff)) if diff.size else 0.0,
        median_abs=float(np.nanmedian(diff)) if diff.size else 0.0,
        max_rel=float(np.nanmax(rel)) if rel.size else 0.0,
        mean_rel=float(np.nanmean(rel)) if rel.size else 0.0,
        worst_index=tuple(int(i) for i in worst),
        required_atol=float(np.nanmax(diff)) if diff.size else 0.0,
        required_rtol=float(np.nanmax(rel)) if rel.size else 0.0,
        passed=bool(ok.all() and not nan_mismatch.any()),
    )


def onnxruntime_outputs(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the model on ONNX Runtime's CPU provider (the test oracle)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise HetrtError("hetrt compare needs onnxruntime as its oracle: pip install 'hetrt[test]'") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))

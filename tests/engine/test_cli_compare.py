"""hetrt compare: verdicts on non-finite outputs, error statistics, stored inputs/outputs, per-layer vs ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from cli_test_models import assert_one_error_line, chain_model, hetrt, overflow_model

from engine.cli import main
from engine.compare import DEFAULT_TOLERANCES, compare_arrays

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def overflow(tmp_path_factory):
    return overflow_model(tmp_path_factory.mktemp("ovf") / "overflow.onnx")


def test_fp16_overflow_is_a_failed_verdict_not_an_exception(overflow):
    r = hetrt("compare", str(overflow), "--fp16")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stderr == ""
    assert "Non-finite values | hetrt: 15, reference: 0" in r.stdout
    assert "FAILED | Some outputs differ" in r.stdout


def test_fp32_build_of_the_same_model_passes(overflow, capsys):
    assert main(["compare", str(overflow)]) == 0
    assert "PASSED | All outputs matched" in capsys.readouterr().out


def test_per_layer_names_the_first_non_finite_layer_against_onnxruntime(overflow, capsys):
    assert main(["compare", str(overflow), "--fp16", "--per-layer"]) == 1
    out = capsys.readouterr().out
    assert "ONNX Runtime's intermediate tensors" in out
    assert "First non-finite layer: 'fc2_overflows' (fully_connected, fp16), tensor 'b'" in out
    assert "--layer-precision fc2_overflows:fp32" in out  # an fp16 layer is pinned to fp32, not to fp16
    rows = [line for line in out.splitlines() if "non-finite of" in line]
    assert rows and all("<--" in row for row in rows)
    assert "FAILED | 1/3 layers" in out
    # fc2 and fc3 (whose input is beyond the fp16 range) pinned to fp32 (wildcards): the overflow is gone
    assert main(["compare", str(overflow), "--fp16", "--per-layer", "--layer-precision", "fc2*:fp32,fc3*:fp32"]) == 0


def test_saved_inputs_and_outputs_round_trip(tmp_path, capsys):
    model = chain_model(tmp_path / "chain.onnx")
    ins, outs = tmp_path / "in.npz", tmp_path / "out.npz"
    assert main(["compare", str(model), "--seed", "5", "--save-inputs", str(ins), "--save-outputs", str(outs)]) == 0
    saved_in, saved_out = dict(np.load(ins)), dict(np.load(outs))
    assert list(saved_in) == ["x"] and saved_in["x"].shape == (2, 8)
    assert np.array_equal(saved_in["x"], np.random.default_rng(5).uniform(-1, 1, (2, 8)).astype(np.float32))
    # an fp16 run against the stored fp32 outputs, on the stored inputs: no ONNX Runtime involved
    capsys.readouterr()
    assert main(["compare", str(model), "--fp16", "--load-inputs", str(ins), "--load-outputs", str(outs)]) == 0
    out = capsys.readouterr().out
    assert f"stored outputs {outs}" in out
    # stored outputs equal to a rerun bit for bit; a perturbed store fails
    saved_out["t5"] = saved_out["t5"] + 0.5
    np.savez(outs, **saved_out)
    assert main(["compare", str(model), "--load-inputs", str(ins), "--load-outputs", str(outs)]) == 1


def test_error_statistics():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(1000)
    got = ref.copy()
    got[7] += 1.0  # one outlier
    for stat, passed in (("elemwise", False), ("max", False), ("mean", True), ("median", True)):
        cmp = compare_arrays("y", got, ref, rtol=0.0, atol=0.01, check=stat)
        assert cmp.passed is passed, stat
    assert compare_arrays("y", got, ref, rtol=0.0, atol=1.01, check="max").passed


def test_nan_and_inf_where_the_reference_has_them_pass_elsewhere_fail():
    ref = np.array([1.0, np.nan, np.inf, -np.inf, 2.0])
    assert compare_arrays("y", ref.copy(), ref, rtol=1e-5).passed
    swapped = ref.copy()
    swapped[2] = -np.inf
    assert not compare_arrays("y", swapped, ref, rtol=1e-5).passed
    all_nan = np.full(4, np.nan)
    cmp = compare_arrays("y", all_nan, np.ones(4), rtol=1e-2)  # all-NaN: a verdict, no ValueError
    assert not cmp.passed and cmp.nonfinite_mismatch == 4 and "not finite" in cmp.report()


def test_int8_default_tolerance_rejects_a_relative_error_of_3():
    """An output whose small elements are off by 3x their value must not pass an INT8 compare by default."""
    rng = np.random.default_rng(4)
    ref = rng.uniform(-1, 1, 1000)
    got = ref.copy()
    got[:50] = ref[:50] * 4.45  # max relative error 3.45 on some elements
    tol = DEFAULT_TOLERANCES["int8"]
    assert not compare_arrays("y", got, ref, tol.rtol, None, "elemwise", tol.atol_scale).passed


def test_help_states_default_tolerances():
    r = hetrt("compare", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for prec, tol in DEFAULT_TOLERANCES.items():
        assert f"{prec}: rtol {tol.rtol:g}" in text


def test_compare_without_onnxruntime_says_so(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    assert main(["compare", str(chain_model(tmp_path / "c.onnx"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "onnxruntime" in err[0] and "pip install" in err[0]


def test_load_outputs_missing_an_output_is_one_line(tmp_path):
    model = chain_model(tmp_path / "c.onnx")
    np.savez(tmp_path / "other.npz", not_y=np.zeros(3))
    assert_one_error_line(hetrt("compare", str(model), "--load-outputs", str(tmp_path / "other.npz")), 2,
                          "'t5'", "missing")

"""Runtime dynamic shapes: one plan built with optimization profiles runs at any shape inside them.

The plan keeps its source model; the runtime specialises it per concrete shape on first use,
caches the engine and reports the specialisation's cost to the profiler. Every shape is checked
against ONNX Runtime on fresh seeded random inputs.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
from graphs import swin_like, vit_like
from test_profiles import conv_net, profile

from engine.builder import BuilderConfig, build_from_onnx
from engine.ir.errors import ExecutionError
from engine.ir.logger import Logger, Severity
from engine.ir.profiles import OptimizationProfile
from engine.profiler import Profiler
from engine.refit import RefitError, Refitter
from engine.runtime import Runtime

ort = pytest.importorskip("onnxruntime")
QUIET = Logger(Severity.ERROR)


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def assert_matches(got: np.ndarray, want: np.ndarray, rel: float = 1e-4) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rel, atol=rel * float(np.abs(want).max()))


@pytest.fixture(scope="module")
def conv_engine():
    plan = build_from_onnx(conv_net(), BuilderConfig(profiles=[profile()]), QUIET)
    return Runtime(QUIET).deserialize(plan)


SHAPES = [(1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 128, 128), (3, 3, 40, 96), (7, 3, 128, 33)]


def test_one_plan_runs_at_every_shape_inside_its_profile_and_matches_onnxruntime(conv_engine):
    assert conv_engine.is_dynamic and conv_engine.num_optimization_profiles == 1
    assert conv_engine.get_tensor_profile_shape("x", 0) == ((1, 3, 32, 32), (4, 3, 64, 64), (8, 3, 128, 128))
    ctx = conv_engine.create_execution_context()
    ctx.profiler = Profiler()
    rng = np.random.default_rng(11)
    for shape in SHAPES:
        ctx.set_input_shape("x", shape)
        assert ctx.get_tensor_shape("x") == shape
        assert ctx.get_tensor_shape("y") == (shape[0], 4)  # before execution
        x = rng.standard_normal(shape).astype(np.float32)
        assert_matches(ctx.execute({"x": x})["y"], run_ort(conv_net(), x))
    built = {tuple(r.shapes["x"]) for r in conv_engine.specialisations}
    assert built == set(SHAPES) - {(4, 3, 64, 64)}  # the plan itself is the opt-shape engine
    timed = [n for n in ctx.profiler.layer_names if n.startswith("[specialise profile 0 x:")]
    assert len(timed) == len(built) and all(ctx.profiler.times(n)[0] > 0 for n in timed)


def test_a_shape_is_specialised_once_and_shared_by_contexts(conv_engine):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 48, 48)).astype(np.float32)
    a, b = conv_engine.create_execution_context(), conv_engine.create_execution_context()
    b.profiler = Profiler()
    np.testing.assert_array_equal(a.execute({"x": x})["y"], b.execute({"x": x})["y"])
    assert [r.shapes["x"] for r in conv_engine.specialisations].count((2, 3, 48, 48)) == 1
    assert not any(n.startswith("[specialise") for n in b.profiler.layer_names)  # built by a, reused by b


def test_activation_memory_is_sized_for_the_max_shapes(conv_engine):
    ctx = conv_engine.create_execution_context()
    engine, _ = conv_engine.specialise({"x": (8, 3, 128, 128)})
    assert engine.memory_plan.peak_bytes <= conv_engine.device_memory_size == ctx.arena.nbytes
    assert conv_engine.device_memory_size > conv_engine.memory_plan.peak_bytes  # more than at opt
    arena = ctx.arena
    ctx.execute({"x": np.random.default_rng(1).standard_normal((8, 3, 128, 128)).astype(np.float32)})
    assert ctx.arena is arena  # never re-allocated inside the profile


@pytest.mark.parametrize("shape, dim, value, lo, hi", [((9, 3, 64, 64), 0, 9, 1, 8), ((4, 3, 16, 64), 2, 16, 32, 128),
                                                       ((4, 3, 64, 129), 3, 129, 32, 128)])
def test_a_shape_outside_the_profile_names_input_dim_value_and_range(conv_engine, shape, dim, value, lo, hi):
    ctx = conv_engine.create_execution_context()
    want = rf"input 'x' dim {dim} = {value} is outside the optimization profile's range \[{lo}, {hi}\]"
    with pytest.raises(ExecutionError, match=want):
        ctx.set_input_shape("x", shape)
    with pytest.raises(ExecutionError, match=want):
        ctx.execute({"x": np.zeros(shape, np.float32)})
    fixed = r"input 'x' dim 1 = 2 is outside the optimization profile's range \[3, 3\]"
    with pytest.raises(ExecutionError, match=fixed):
        ctx.set_input_shape("x", (4, 2, 64, 64))
    with pytest.raises(ExecutionError, match="is an output"):
        ctx.set_input_shape("y", (4, 4))


def test_two_profiles_in_one_engine_each_selectable():
    small = OptimizationProfile().set_shape("x", (1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 64, 64))
    large = OptimizationProfile().set_shape("x", (5, 3, 96, 96), (6, 3, 112, 112), (8, 3, 128, 128))
    engine = Runtime(QUIET).deserialize(build_from_onnx(conv_net(), BuilderConfig(profiles=[small, large]), QUIET))
    assert engine.num_optimization_profiles == 2
    assert engine.get_tensor_profile_shape("x", 1)[2] == (8, 3, 128, 128)
    ctx = engine.create_execution_context()
    rng = np.random.default_rng(13)
    x_large = rng.standard_normal((6, 3, 100, 100)).astype(np.float32)
    with pytest.raises(ExecutionError, match=r"dim 0 = 6 is outside the optimization profile's range \[1, 4\]"):
        ctx.execute({"x": x_large})
    ctx.set_optimization_profile(1)
    assert ctx.optimization_profile == 1 and ctx.get_tensor_shape("x") == (6, 3, 112, 112)
    assert_matches(ctx.execute({"x": x_large})["y"], run_ort(conv_net(), x_large))
    x_small = rng.standard_normal((3, 3, 40, 40)).astype(np.float32)
    with pytest.raises(ExecutionError, match=r"dim 0 = 3 is outside the optimization profile's range \[5, 8\]"):
        ctx.execute({"x": x_small})
    ctx.set_optimization_profile(0)
    assert_matches(ctx.execute({"x": x_small})["y"], run_ort(conv_net(), x_small))
    with pytest.raises(ExecutionError, match=r"optimization profile 2 does not exist; engine .* has 2"):
        ctx.set_optimization_profile(2)


def test_frames_of_different_shapes_in_one_call(conv_engine):
    rng = np.random.default_rng(14)
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(1, 3, 32, 32), (1, 3, 32, 32), (2, 3, 64, 32)]]
    ctx = conv_engine.create_execution_context()
    outs = ctx.execute_frames([{"x": x} for x in xs])
    for x, out in zip(xs, outs):
        assert_matches(out["y"], run_ort(conv_net(), x))
    assert {e.frame for e in ctx.last_events} == {0, 1, 2}


def test_specialised_engines_are_a_bounded_cache(conv_engine):
    spec = conv_engine._specialiser
    spec.max_cached, before = 2, spec.max_cached
    try:
        for b in (1, 2, 3):
            conv_engine.specialise({"x": (b, 3, 32, 32)})
        assert len(spec._cache) == 2
    finally:
        spec.max_cached = before


def test_execute_async_binds_host_buffers_at_any_shape_inside_the_profile(conv_engine):
    rng = np.random.default_rng(15)
    ctx = conv_engine.create_execution_context()
    x = rng.standard_normal((5, 3, 64, 48)).astype(np.float32)
    out = np.empty((5, 4), np.float32)
    ctx.set_tensor_address("x", x)
    ctx.set_tensor_address("y", out)
    result = ctx.execute_async()
    assert result["y"] is out
    assert_matches(out, run_ort(conv_net(), x))
    other = np.empty((5, 4), np.float32)
    ctx.execute_async(outputs={"y": other})
    np.testing.assert_array_equal(other, out)
    with pytest.raises(ExecutionError, match=r"output buffer 'y' has shape \(4, 4\); the output's shape is \(5, 4\)"):
        ctx.execute_async(outputs={"y": np.empty((4, 4), np.float32)})
    with pytest.raises(ExecutionError, match="'x' is an input .* not an output"):
        ctx.execute_async(outputs={"x": out})


def test_a_profile_plan_is_not_refittable_unless_built_so():
    plan = build_from_onnx(conv_net(), BuilderConfig(profiles=[profile()]), QUIET)
    with pytest.raises(RefitError, match="not built refittable"):
        Refitter(plan)


TRANSFORMERS = {"vit": (vit_like, (3, 32, 32)), "swin": (swin_like, (8, 8, 32))}


@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_transformer_graphs_built_once_with_a_batch_profile_run_at_batch_1_and_3(name):
    make, sample = TRANSFORMERS[name]
    model = make()
    batch = OptimizationProfile().set_shape("x", (1, *sample), (2, *sample), (4, *sample))
    ctx = Runtime(QUIET).deserialize(build_from_onnx(model, BuilderConfig(profiles=[batch]), QUIET)
                                     ).create_execution_context()
    rng = np.random.default_rng(16)
    for b in (1, 3):
        x = rng.standard_normal((b, *sample)).astype(np.float32)
        assert_matches(ctx.execute({"x": x})["y"], run_ort(model, x))


def test_torch_encoder_built_once_with_a_batch_profile_runs_at_batch_1_and_3():
    torch = pytest.importorskip("torch")
    from torch_models import transformer_encoder

    torch.manual_seed(0)
    module = transformer_encoder().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 10, 64),), buf, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    model = onnx.load_from_string(buf.getvalue())
    batch = OptimizationProfile().set_shape("x", (1, 10, 64), (2, 10, 64), (4, 10, 64))
    ctx = Runtime(QUIET).deserialize(build_from_onnx(model, BuilderConfig(profiles=[batch]), QUIET)
                                     ).create_execution_context()
    rng = np.random.default_rng(17)
    for b in (1, 3):
        x = rng.standard_normal((b, 10, 64)).astype(np.float32)
        assert_matches(ctx.execute({"x": x})["y"], run_ort(model, x))


def _dla_engine(prof: OptimizationProfile, **kw):
    cfg = BuilderConfig(fp16=True, platform="orin-agx-64gb", placement_policy="dla-first", profiles=[prof], **kw)
    return Runtime(QUIET, platform="orin-agx-64gb").deserialize(build_from_onnx(conv_net(), cfg, QUIET))


def test_dynamic_dims_keep_layers_off_the_dla_and_say_why():
    engine = _dla_engine(profile())
    assert {p.device for p in engine.partitions} == {"gpu"}
    reasons = engine.placement["fallback_reasons"]
    assert reasons["Conv_0 + Relu_1"] == ("dynamic dimension 0 of tensor 'x'; give min = opt = max to keep it on "
                                          "the DLA")
    assert "GlobalAveragePool_2" not in reasons  # not DLA-capable anyway: its own reason stands
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)  # a specialised engine keeps the refusals
    ctx = engine.create_execution_context()
    assert_matches(ctx.execute({"x": x})["y"], run_ort(conv_net(), x), rel=1e-2)
    assert any(r.shapes["x"] == (2, 3, 32, 32) for r in engine.specialisations)
    spec_engine, _ = engine.specialise({"x": (2, 3, 32, 32)})
    assert {p.device for p in spec_engine.partitions} == {"gpu"}
    with pytest.raises(Exception, match="dynamic dimension 0 of tensor 'x'; give min = opt = max"):
        _dla_engine(profile(), gpu_fallback=False)


def test_a_static_profile_keeps_the_dla():
    static = OptimizationProfile().set_shape("x", (2, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32))
    engine = _dla_engine(static)
    assert "dla" in {p.device for p in engine.partitions} and not engine.placement.get("fallback_reasons")
    x = np.random.default_rng(19).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert_matches(engine.create_execution_context().execute({"x": x})["y"], run_ort(conv_net(), x), rel=1e-2)


def test_cli_builds_profiles_runs_inside_them_and_inspect_lists_them(tmp_path, capsys):
    from engine.cli import main

    onnx.save(conv_net(), str(tmp_path / "conv.onnx"))
    plan = tmp_path / "conv.plan"
    assert main(["build", str(tmp_path / "conv.onnx"), "-o", str(plan), "--min-shapes", "x:1x3x32x32",
                 "--opt-shapes", "x:4x3x64x64", "--max-shapes", "x:8x3x128x128", "--min-shapes", "x:9x3x32x32",
                 "--max-shapes", "x:16x3x32x32"]) == 0
    engine = Runtime(QUIET).deserialize(plan.read_bytes())
    assert [p.to_dict() for p in engine.profiles] == [
        {"x": {"min": [1, 3, 32, 32], "opt": [4, 3, 64, 64], "max": [8, 3, 128, 128]}},
        {"x": {"min": [9, 3, 32, 32], "opt": [16, 3, 32, 32], "max": [16, 3, 32, 32]}}]
    capsys.readouterr()
    assert main(["inspect", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "optimization profile 0: x min 1x3x32x32 opt 4x3x64x64 max 8x3x128x128" in out
    assert "optimization profile 1: x min 9x3x32x32 opt 16x3x32x32 max 16x3x32x32" in out
    x = np.random.default_rng(20).uniform(-1, 1, (3, 3, 40, 72)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    times = tmp_path / "times.json"
    assert main(["run", str(plan), "--shapes", "x:3x3x40x72", "--load-inputs", f"x:{tmp_path / 'x.npy'}",
                 "--iterations", "3", "--duration", "0", "--warmup", "0", "--no-data-transfers",
                 "--export-times", str(times), "--save-outputs", str(tmp_path / "y.npz")]) == 0
    assert_matches(np.load(tmp_path / "y.npz")["y"], run_ort(conv_net(), x))
    import json

    records = json.loads(times.read_text())
    assert len(records) >= 3 and {"enqueueMs", "h2dMs", "computeMs", "d2hMs", "latencyMs"} <= set(records[0])
    assert main(["run", str(plan), "--shapes", "x:9x3x32x32", "--iterations", "1", "--duration", "0",
                 "--warmup", "0"]) != 0
    assert "input 'x' dim 0 = 9 is outside the optimization profile's range [1, 8]" in capsys.readouterr().err
    assert main(["run", str(plan), "--profile", "1", "--shapes", "x:10x3x32x32", "--iterations", "1",
                 "--duration", "0", "--warmup", "0"]) == 0


def test_specialised_builds_reuse_the_plans_build_configuration():
    plan = build_from_onnx(conv_net(), BuilderConfig(fp16=True, profiles=[profile()], optimization_level=2), QUIET)
    engine = Runtime(QUIET).deserialize(plan)
    special, record = engine.specialise({"x": (2, 3, 48, 48)})
    assert record is not None and record.build_seconds > 0
    base, spec = engine.build_config, special.build_config
    assert {k: v for k, v in spec.items() if k not in ("profiles", "input_shapes")} == \
        {k: v for k, v in base.items() if k not in ("profiles", "input_shapes")}
    assert [la.precision for la in special.network.layers] == [la.precision for la in engine.network.layers]
    x = np.random.default_rng(21).standard_normal((2, 3, 48, 48)).astype(np.float32)
    assert_matches(engine.create_execution_context().execute({"x": x})["y"], run_ort(conv_net(), x), rel=1e-2)


def test_memory_limit_applies_at_the_max_shapes():
    from engine.ir.errors import BuildError

    with pytest.raises(BuildError, match="at the max shapes of optimization profile 0 needs"):
        build_from_onnx(conv_net(), BuilderConfig(profiles=[profile()], memory_limit=1 << 20), QUIET)


def test_profiles_need_an_onnx_model():
    from engine.builder import Builder
    from engine.ir.errors import UnsupportedError
    from engine.onnx_parser import parse

    network = parse(conv_net(), input_shapes={"x": (4, 3, 64, 64)})
    with pytest.raises(UnsupportedError, match="optimization profiles need the ONNX model"):
        Builder(QUIET).build(network, BuilderConfig(profiles=[profile()]))


def test_calibrated_int8_specialisations_reuse_the_plans_scales():
    from engine.quantization import make_calibrator

    rng = np.random.default_rng(22)
    calib = [{"x": rng.standard_normal((4, 3, 64, 64)).astype(np.float32)} for _ in range(2)]
    plan = build_from_onnx(conv_net(), BuilderConfig(int8=True, profiles=[profile()],
                                                     calibrator=make_calibrator("minmax", calib)), QUIET)
    engine = Runtime(QUIET).deserialize(plan)
    special, _ = engine.specialise({"x": (2, 3, 32, 32)})
    pairs = list(zip(special.network.layers, engine.network.layers))
    assert [a.precision for a, _ in pairs] == [b.precision for _, b in pairs]
    int8 = [(a, b) for a, b in pairs if a.precision is not None and a.precision.value == "int8"]
    assert int8  # the same INT8 annotation (scales) and quantized kernels as the plan's own build
    assert all(a.params == b.params and np.array_equal(a.weights["kernel"], b.weights["kernel"])
               for a, b in int8 if "kernel" in a.weights)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    got = engine.create_execution_context().execute({"x": x})["y"]
    want = run_ort(conv_net(), x)
    assert float(np.abs(got - want).max()) < 0.1 * float(np.abs(want).max())  # INT8: within the quantization error

"""Crafted plans (checksums recomputed) are refused at load with a PlanError naming layer and field
(audit findings 2-5); the builder never writes a plan the loader refuses."""

from __future__ import annotations

import copy
import gc
import time

import numpy as np
import pytest

from engine import plan as P
from engine.builder import BuilderConfig, build_from_onnx, build_serialized
from engine.ir.errors import BuildError, HetrtError, PlanError
from engine.ir.layers import ResizeParams
from engine.ir.logger import Logger, Severity
from engine.ir.network import Network
from engine.runtime import Runtime
from engine.verify import ResourceLimits

from .forge import join_loadable, join_plan, split_loadable, split_plan
from .models import conv_model

QUIET = Logger(Severity.ERROR)


@pytest.fixture(scope="module")
def host_plan() -> bytes:
    return build_from_onnx(conv_model(), BuilderConfig(), QUIET)


@pytest.fixture(scope="module")
def dla_plan() -> bytes:
    cfg = BuilderConfig(fp16=True, default_device="dla", platform="orin-agx-64gb")
    return build_from_onnx(conv_model(), cfg, QUIET)


def _mutated(plan: bytes, edit) -> bytes:
    manifest, blobs, platform = split_plan(plan)
    edit(manifest, blobs)
    return join_plan(manifest, blobs, platform)


def _layer(manifest: dict, kind: str) -> dict:
    return next(la for la in manifest["network"]["layers"] if la["kind"] == kind)


def _refused(data: bytes, *patterns: str) -> str:
    with pytest.raises(PlanError) as info:
        Runtime(QUIET).deserialize(data)
    for p in patterns:
        assert p in str(info.value), str(info.value)
    return str(info.value)


# ------------------------------------------------------------------- finding 5: late validation


def _set_param(kind: str, field: str, value):
    def edit(m, _):
        _layer(m, kind)["params"][field] = value
    return edit


@pytest.mark.parametrize(("kind", "field", "value", "says"), [
    ("convolution", "activation", "relu", "params.activation"),
    ("convolution", "groups", True, "params.groups"),
    ("convolution", "kernel", ["3", 3], "params.kernel[0]"),
    ("convolution", "num_output_maps", 2**40, "params.num_output_maps"),
    ("pooling", "type", "median", "params.type"),
    ("pooling", "window", [2, 2.5], "params.window[1]"),
])
def test_wrong_typed_parameters_are_refused_naming_layer_and_field(host_plan, kind, field, value, says):
    msg = _refused(_mutated(host_plan, _set_param(kind, field, value)), says)
    assert "layer '" in msg


def test_activation_alpha_nan_is_refused(host_plan):
    def edit(m, _):
        _layer(m, "convolution")["params"]["activation"]["alpha"] = float("nan")
    _refused(_mutated(host_plan, edit), "params.activation.alpha", "finite")


def test_bool_and_int8_kernels_of_float_layers_are_refused(host_plan):
    for dtype in ("bool", "int8"):
        def edit(m, blobs, dtype=dtype):
            idx = _layer(m, "convolution")["weights"]["kernel"]
            n = int(np.prod(m["blobs"][idx]["shape"]))
            m["blobs"][idx]["dtype"] = dtype
            blobs[idx] = bytes(n)
        _refused(_mutated(host_plan, edit), "weights 'kernel'", dtype)


def test_layer_with_too_many_inputs_is_refused(host_plan):
    def edit(m, _):
        la = _layer(m, "pooling")
        la["inputs"] = la["inputs"] * 3
    _refused(_mutated(host_plan, edit), "inputs: 3 tensors")


def test_deep_json_is_refused_at_load(host_plan):
    def edit(m, _):
        deep: list = []
        for _ in range(500):
            deep = [deep]
        m["metadata"]["deep"] = deep
    _refused(_mutated(host_plan, edit), "nests deeper")


def _resize_network(out_w: int, scales=None) -> Network:
    n = Network("resize")
    x = n.add_input("x", (1, 1, 1, 2))
    y = n.add_layer(ResizeParams(output_shape=(1, 1, 1, 4), scales=scales), [x], name="up")
    n.mark_output(y.outputs[0])
    return n


def _resize_plan(width: int, scale: float | None = None) -> bytes:
    plan = build_serialized(_resize_network(4), BuilderConfig(optimize=False), QUIET)

    def edit(m, _):
        la = _layer(m, "resize")
        la["params"]["output_shape"] = [1, 1, 1, width]
        if scale is not None:
            la["params"]["scales"] = [1.0, 1.0, 1.0, scale]
        out = la["outputs"][0]
        next(t for t in m["network"]["tensors"] if t["name"] == out)["shape"] = [1, 1, 1, width]
    return _mutated(plan, edit)


def test_resize_bomb_is_refused_before_any_arithmetic():
    """Finding 4: a resize to 1x1x1x2^28 burned 80 s in Fraction arithmetic, then MemoryError."""
    t0 = time.perf_counter()
    _refused(_resize_plan(2**28), "layer 'up'")
    _refused(_resize_plan(2**20, scale=2.0**19), "params.output_shape[3]")
    _refused(_resize_plan(4, scale=5e-324), "params.scales[3]")
    _refused(_resize_plan(4, scale=2.0**-40), "params.scales[3]")
    assert time.perf_counter() - t0 < 5.0


def test_resize_scales_must_match_the_output():
    _refused(_resize_plan(4, scale=3.0), "maps 2 elements to 6")


def test_resource_limits_are_configurable(host_plan):
    P.deserialize(host_plan)
    with pytest.raises(PlanError, match="more than the limit of 100"):
        P.deserialize(host_plan, limits=ResourceLimits(max_tensor_elements=100))
    with pytest.raises(PlanError, match="layers, more than the limit of 1"):
        P.deserialize(host_plan, limits=ResourceLimits(max_layers=1))
    with pytest.raises(PlanError, match="bytes of tensors and weights"):
        P.deserialize(host_plan, limits=ResourceLimits(max_total_bytes=1000))


def test_size_limit_counts_tensors_live_at_once_not_their_sum():
    """A deep network at a large batch holds far less at once than the sum of its tensors (ViT-B/16
    at batch 256: 75 GB summed); the limit applies to weights plus the largest live set."""
    n = Network("chain")
    t = n.add_input("x", (4, 8, 16, 16))
    for i in range(30):
        t = n.add_activation(t, "relu" if i % 2 else "sigmoid", name=f"act{i}")
    n.mark_output(t)
    plan = build_serialized(n, BuilderConfig(optimize=False), QUIET)
    each = 4 * 8 * 16 * 16 * 4
    P.deserialize(plan, limits=ResourceLimits(max_total_bytes=2 * each))  # the sum is 31 * each
    with pytest.raises(PlanError, match=f"{2 * each} bytes of tensors and weights at once"):
        P.deserialize(plan, limits=ResourceLimits(max_total_bytes=2 * each - 1))


def test_8gib_tensor_is_refused_before_allocation(host_plan):
    """2**31 elements: past the kernels' 32-bit offsets, refused before anything is allocated."""
    def edit(m, _):
        la = _layer(m, "pooling")
        out = la["outputs"][0]
        next(t for t in m["network"]["tensors"] if t["name"] == out)["shape"] = [1, 8, 65536, 4096]
    _refused(_mutated(host_plan, edit), "more than the limit")


@pytest.mark.parametrize("model", ["mobilenet_v2", "efficientnet_b0"])
def test_batch256_mobile_plans_are_written_and_load(model):
    """Their largest activation (256 x 96 x 112 x 112 = 308M elements) is a real plan's, not a
    hostile one: the builder writes the plan and it loads under the default limits."""
    from engine.models import zoo
    from engine.onnx_parser import parse

    data = build_serialized(parse(getattr(zoo, model)(), batch=256), BuilderConfig(fp16=True), QUIET)
    assert max(int(np.prod(t.shape)) for t in P.deserialize(data).network.tensors.values()) == 256 * 96 * 112 * 112


# ----------------------------------------------------------- the builder writes only loadable plans


def test_builder_refuses_to_write_a_plan_with_huge_dims():
    n = Network("wide")
    x = n.add_input("x", (1, 2**31))
    n.mark_output(n.add_activation(x, "relu", name="act"))
    with pytest.raises(HetrtError, match="2147483647|limit"):
        build_serialized(n, BuilderConfig(optimize=False), QUIET)


def test_builder_refuses_batch_zero():
    with pytest.raises((PlanError, BuildError), match="zero dimension|batch"):
        build_from_onnx(conv_model(batch=0), BuilderConfig(), QUIET)


# ------------------------------------------------------------------ finding 3: GPU tactics


@pytest.mark.parametrize("tactic", ["igemm_7x13_w1x1_s9_k1", "igemm_64x64_w2x2_s4_k-1", "igemm_64x64_w2x2_s4_k0",
                                    "igemm_64x64_w2x2_s4_k+1", "s8igemm_64x64_w2x2_s4_k99", "direct", 7,
                                    "wgmma_128x256x64_w2x4_s4_k1", "wgmma_96x256x64_w6x1_s4_k1",
                                    "wgmma_128x256_w8x1_s4_k1", "wgmma_128x256x64_w8x1_s9_k1"])
def test_unknown_gpu_tactics_are_refused(host_plan, tactic):
    def edit(m, _):
        m["tactics"][_layer(m, "convolution")["name"]] = tactic
    _refused(_mutated(host_plan, edit), "plan tactics: layer", "not a tactic of the compiled kernels")


def test_tactic_for_a_missing_or_non_conv_layer_is_refused(host_plan):
    def edit(m, _):
        m["tactics"]["nope"] = "igemm_64x64_w2x2_s4_k1"
    _refused(_mutated(host_plan, edit), "layer 'nope': no such layer")


def test_compiled_tactic_knows_the_tile_set():
    from backends.gpu.kernels.conv import TILES, TILES_WG, ConvTactic
    from backends.gpu.kernels.int8 import TILES8, TILES8_WG, Tactic8
    from backends.gpu.tactics import compiled_tactic

    assert all(compiled_tactic(ConvTactic(t, s).name) for t in TILES for s in (1, 16))
    assert all(compiled_tactic(Tactic8(t, s).name) for t in TILES8 for s in (1, 16))
    t8 = TILES8[-1]  # an INT8-only tile spelled as an fp16 tactic
    assert not compiled_tactic(f"igemm_{t8.dims}_w{t8.wm}x{t8.wn}_s{t8.stages}_k1")
    assert all(compiled_tactic(ConvTactic(t, 2).name) for t in TILES_WG)
    assert all(compiled_tactic(Tactic8(t, 2).name) for t in TILES8_WG)


# ----------------------------------------------------------------- finding 2: DLA loadables


def _dla_edit(edit_loadable=None, edit_record=None):
    def edit(m, blobs):
        part = next(p for p in m["placement"]["partitions"] if p["device"] == "dla")
        if edit_record is not None:
            edit_record(part)
        if edit_loadable is not None:
            idx = m["loadables"][part["loadable"]]
            lm, region = split_loadable(blobs[idx])
            edit_loadable(lm)
            blobs[idx] = join_loadable(lm, region)
            m["blobs"][idx]["shape"] = [len(blobs[idx])]
    return edit


def _op(lm: dict, unit: str) -> dict:
    return next(op for op in lm["ops"] if op["__type__"].lower().startswith(unit))


DLA_ATTACKS = {
    "kernel as string": (lambda lm: _op(lm, "conv").__setitem__("kernel", "3x3"), None),
    "kernel out of limits": (lambda lm: _op(lm, "conv").__setitem__("kernel", [99, 99]), None),
    "stride zero": (lambda lm: _op(lm, "conv").__setitem__("stride", [0, 0]), None),
    "groups as float": (lambda lm: _op(lm, "conv").__setitem__("groups", 1.5), None),
    "unknown op type": (lambda lm: _op(lm, "conv").__setitem__("__type__", "EvalOp"), None),
    "tensor in sram beyond it": (lambda lm: lm["tensors"][0].update(memory="sram", offset=2**40), None),
    "tensor offset as string": (lambda lm: lm["tensors"][0].update(offset="0"), None),
    "meta inputs garbage": (lambda lm: lm["meta"].__setitem__("inputs", 5), None),
    "meta owners garbage": (lambda lm: lm["meta"].__setitem__("owners", [1, 2]), None),
    "config of another DLA": (lambda lm: lm.__setitem__("config", "nv_small"), None),
    "pdp mode": (lambda lm: _op(lm, "pdp").__setitem__("mode", "median"), None),
    "negative cube": (lambda lm: lm["tensors"][0]["cube"].__setitem__("n", -1) if lm["tensors"][0].get("cube")
                      else lm["tensors"][0].__setitem__("cube", {"__type__": "CubeDesc", "c": -1, "h": 1, "w": 1}),
                      None),
    "sdp operand duplicated": (lambda lm: _op(lm, "sdp")["inputs"].append(_op(lm, "sdp")["inputs"][-1]), None),
    "pdp input height": (lambda lm: _op(lm, "pdp")["input"].__setitem__("h", 9), None),
    "loadable index": (None, lambda r: r.__setitem__("loadable", 7)),
    "loadable index type": (None, lambda r: r.__setitem__("loadable", "0")),
    "unknown boundary tensor": (None, lambda r: r.__setitem__("dla_inputs", ["nope"])),
    "record config": (None, lambda r: r.__setitem__("dla_config", "nv_full")),
    "core": (None, lambda r: r.__setitem__("core", "0")),
    "device": (None, lambda r: r.__setitem__("device", "tpu")),
    "layer unknown": (None, lambda r: r["layers"].append("ghost")),
}


@pytest.mark.parametrize("name", sorted(DLA_ATTACKS))
def test_crafted_dla_loadables_and_records_are_refused_at_load(dla_plan, name):
    """Finding 2: 18 crafted loadable/record attacks loaded and crashed the first execute."""
    ld_edit, rec_edit = DLA_ATTACKS[name]
    _refused(_mutated(dla_plan, _dla_edit(ld_edit, rec_edit)), "plan placement")


def test_untouched_dla_plan_loads_and_runs(dla_plan):
    engine = Runtime(QUIET).deserialize(dla_plan)
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    assert engine.create_execution_context().execute({"x": x})["y"].shape == (1, 8, 4, 4)


def test_hetrt_run_on_a_crafted_plan_prints_an_error_not_a_traceback(dla_plan, tmp_path, capsys):
    from engine.cli import main

    bad = tmp_path / "bad.plan"
    bad.write_bytes(_mutated(dla_plan, _dla_edit(DLA_ATTACKS["kernel as string"][0])))
    assert main(["run", str(bad), "--iterations", "1", "--duration", "0", "--warmup", "0"]) == 2
    err = capsys.readouterr().err
    assert "PlanError" in err and "Traceback" not in err


# ------------------------------------------------------------------ finding 4: load time


def _chain_plan(layers: int) -> bytes:
    n = Network(f"chain{layers}")
    t = n.add_input("x", (1, 4))
    for i in range(layers):
        t = n.add_activation(t, "relu", name=f"a{i}")
    n.mark_output(t)
    contents = P.PlanContents(network=n, placement={"partitions": [
        {"device": "gpu", "backend": "reference", "layers": [f"a{i}" for i in range(layers)]}]})
    return P.serialize(contents)


def test_plan_load_time_is_linear_in_layers():
    """Finding 4: 20k layers took 8.8 s (quadratic). 4x the layers may cost at most 8x the time (a
    quadratic load would cost 16x); the margin absorbs the noise of a shared machine."""
    small, big = _chain_plan(2_500), _chain_plan(10_000)

    def best(data):
        # CPU time of this process with the collector off: other processes on the machine (parallel
        # test workers) and collection pauses do not count, the work of the load does
        times = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                t0 = time.process_time()
                P.deserialize(data)
                times.append(time.process_time() - t0)
        finally:
            gc.enable()
        return min(times)

    ts, tb = best(small), best(big)
    assert tb < 8 * ts + 0.05, (ts, tb)


def test_same_checks_on_copies_do_not_mutate(host_plan):
    manifest, blobs, platform = split_plan(host_plan)
    again = join_plan(copy.deepcopy(manifest), list(blobs), platform)
    assert again == host_plan

"""Device-resident execution through the public API: CuPy arrays and PyTorch CUDA tensors as inputs
and as caller-provided output buffers, enqueued on the caller's stream without host copies; several
contexts on several streams at once. Skipped without CUDA."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from backends.gpu.availability import gpu_available

_ok, _why = gpu_available()
if not _ok:
    pytest.skip(_why, allow_module_level=True)

import cupy  # noqa: E402

from engine.builder import Builder, BuilderConfig, build_from_onnx  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.ir.network import Network  # noqa: E402
from engine.perf import IterationTimer  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

pytestmark = pytest.mark.gpu
QUIET = Logger(Severity.ERROR)
SHAPE = (2, 8, 12, 12)


def _engine(rng: np.random.Generator):
    n = Network("device-io")
    x = n.add_input("x", SHAPE)
    y = n.add_convolution(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2,
                          rng.standard_normal(16).astype(np.float32), padding=(1, 1), name="conv1")
    y = n.add_activation(y, "relu", name="relu1")
    y = n.add_convolution(y, rng.standard_normal((4, 16, 1, 1)).astype(np.float32) * 0.2, name="head")
    n.mark_output(y)
    n.validate()
    engine = Runtime(QUIET).deserialize(Builder(QUIET).build_serialized_network(n, BuilderConfig(fp16=True)))
    assert {p.backend for p in engine.partitions} == {"gpu"}
    return engine


@contextlib.contextmanager
def no_host_transfers():
    """Any host<->device copy through CuPy (get, set, asnumpy, numpy conversion) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a host<->device transfer happened")

    saved = {k: getattr(cupy.ndarray, k) for k in ("get", "set", "__array__")}
    saved_asnumpy = cupy.asnumpy
    for k in saved:
        setattr(cupy.ndarray, k, refuse)
    cupy.asnumpy = refuse
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(cupy.ndarray, k, v)
        cupy.asnumpy = saved_asnumpy


def test_cupy_inputs_and_output_buffers_without_host_copies(rng):
    engine = _engine(rng)
    out_name = engine.output_names[0]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    want = engine.create_execution_context().execute({"x": x})[out_name]
    ctx = engine.create_execution_context()
    x_dev = cupy.asarray(x)
    out = cupy.empty(want.shape, cupy.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with no_host_transfers():
        got = ctx.execute_async({"x": x_dev}, stream, outputs={out_name: out})
        assert got[out_name] is out
        ctx.set_tensor_address("x", x_dev)  # the same through bound addresses
        bound = cupy.empty_like(out)
        ctx.set_tensor_address(out_name, bound)
        ctx.execute_async(stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(out), want)
    np.testing.assert_array_equal(cupy.asnumpy(bound), want)


def test_torch_cuda_tensors_in_and_out_on_a_torch_stream(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    engine = _engine(rng)
    out_name = engine.output_names[0]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    want = engine.create_execution_context().execute({"x": x})[out_name]
    ctx = engine.create_execution_context()
    x_t = torch.from_numpy(x).cuda()
    out_t = torch.empty(want.shape, dtype=torch.float32, device="cuda")
    stream = torch.cuda.Stream()
    torch.cuda.synchronize()
    with no_host_transfers():
        got = ctx.execute_async({"x": x_t}, stream, outputs={out_name: out_t})
    assert got[out_name] is out_t
    stream.synchronize()
    np.testing.assert_array_equal(out_t.cpu().numpy(), want)


def test_host_numpy_through_the_same_path(rng):
    engine = _engine(rng)
    out_name = engine.output_names[0]
    x = rng.standard_normal(SHAPE).astype(np.float32)
    want = engine.create_execution_context().execute({"x": x})[out_name]
    out = np.empty_like(want)
    stream = cupy.cuda.Stream(non_blocking=True)
    engine.create_execution_context().execute_async({"x": x}, stream, outputs={out_name: out})
    stream.synchronize()
    np.testing.assert_array_equal(out, want)


def test_four_contexts_on_four_streams_match_serial_runs_bit_for_bit(rng):
    engine = _engine(rng)
    out_name = engine.output_names[0]
    frames = [[cupy.asarray(rng.standard_normal(SHAPE).astype(np.float32)) for _ in range(8)] for _ in range(4)]
    serial_ctx = engine.create_execution_context()
    serial = []
    for xs in frames:
        outs = []
        for x in xs:
            out = cupy.empty((2, 4, 12, 12), cupy.float32)
            serial_ctx.execute_async({"x": x}, None, outputs={out_name: out})
            cupy.cuda.Device().synchronize()
            outs.append(out)
        serial.append(outs)
    contexts = [engine.create_execution_context() for _ in range(4)]
    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(4)]
    results: list[list] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(i: int) -> None:
        try:
            start.wait()
            with streams[i]:
                for x in frames[i]:
                    out = cupy.empty((2, 4, 12, 12), cupy.float32)
                    contexts[i].execute_async({"x": x}, streams[i], outputs={out_name: out})
                    results[i].append(out)
            streams[i].synchronize()
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    for i in range(4):
        for got, want in zip(results[i], serial[i]):
            assert bool(cupy.array_equal(got, want))


def test_dynamic_shapes_with_device_arrays(rng):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "transformers"))
    from test_profiles import conv_net, profile

    # FP16: every layer of this network has a GPU kernel (FP32 global pooling would run on the host)
    engine = Runtime(QUIET).deserialize(build_from_onnx(conv_net(), BuilderConfig(fp16=True, profiles=[profile()]),
                                                        QUIET))
    ctx = engine.create_execution_context()
    stream = cupy.cuda.Stream(non_blocking=True)
    for shape in [(1, 3, 32, 32), (5, 3, 96, 64)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = engine.create_execution_context().execute({"x": x})["y"]
        ctx.set_input_shape("x", shape)
        out = cupy.empty(ctx.get_tensor_shape("y"), cupy.float32)
        ctx.execute_async({"x": cupy.asarray(x)}, stream, outputs={"y": out})
        stream.synchronize()
        np.testing.assert_allclose(cupy.asnumpy(out), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_iteration_times_split_h2d_compute_d2h_and_no_data_transfers(rng):
    engine = _engine(rng)
    feeds = {"x": rng.standard_normal(SHAPE).astype(np.float32)}
    timer = IterationTimer(engine.create_execution_context(), feeds)
    assert timer.device
    for _ in range(3):
        timer()
    assert all(r["h2dMs"] > 0 and r["computeMs"] > 0 and r["d2hMs"] > 0 for r in timer.records)
    quiet = IterationTimer(engine.create_execution_context(), feeds, no_data_transfers=True)
    with no_host_transfers():  # inputs staged once, outputs left on the device
        for _ in range(3):
            quiet()
    assert all(r["computeMs"] > 0 for r in quiet.records)

"""``hetrt eval`` on the bundled digits data: FP32, INT8 on the reference backend, INT8 on the
simulated Orin DLA (with GPU fallback: a mixed plan). One worker, two local worker processes and a
local Ray cluster must give the same logits bit for bit; killing a Ray worker loses no shard."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("sklearn")

from engine.builder import BuilderConfig, build_from_onnx  # noqa: E402
from engine.evaluation import EvalOptions, evaluate, open_dataset  # noqa: E402
from engine.evaluation.bundled import write_digits  # noqa: E402
from engine.evaluation.evaluate import plan_logits  # noqa: E402
from engine.ir.logger import Logger, Severity  # noqa: E402
from engine.quantization import make_calibrator  # noqa: E402
from engine.runtime import Runtime  # noqa: E402

QUIET = Logger(Severity.ERROR)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    paths = write_digits(folder)
    dataset = open_dataset(paths["data"], paths["labels"], sample_ndim=3)
    plans = {"fp32": build_from_onnx(paths["model"], BuilderConfig(batch=64), QUIET)}
    for name, extra in (("int8", {}), ("int8-dla", {"platform": "orin-agx-64gb", "default_device": "dla",
                                                     "dla_core": 0, "gpu_fallback": True})):
        cal = make_calibrator("entropy", paths["calib"])
        plans[name] = build_from_onnx(paths["model"], BuilderConfig(batch=64, int8=True, calibrator=cal, **extra),
                                      QUIET)
    return paths, dataset, plans


def test_digits_accuracy_per_deployment(digits):
    paths, dataset, plans = digits
    devices = {p["device"] for p in Runtime(QUIET).deserialize(plans["int8-dla"]).placement["partitions"]}
    assert "dla" in devices  # the DLA plan really runs layers on the simulated DLA
    results = evaluate(list(plans.items()), dataset, EvalOptions(top_k=(1, 2), worst=3), paths["model"])
    acc = {r.name: r.topk[1] for r in results}
    assert acc["fp32"] > 0.95
    assert results[0].agreement.max_abs_logit_error < 1e-4  # hetrt FP32 against ONNX Runtime
    for name in ("int8", "int8-dla"):
        assert abs(acc[name] - acc["fp32"]) <= 0.01, acc
    assert all(len(r.worst) == 3 for r in results)


@pytest.mark.parametrize("name", ["fp32", "int8-dla"])
def test_two_local_workers_equal_one(digits, name):
    _, dataset, plans = digits
    one, _, _ = plan_logits(plans[name], dataset, EvalOptions(batches_per_shard=1))
    two, _, how = plan_logits(plans[name], dataset, EvalOptions(workers=2, batches_per_shard=1))
    assert "2 local worker" in how
    np.testing.assert_array_equal(one, two)


def test_local_ray_equals_one_process_and_survives_a_killed_worker(digits):
    ray = pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    _, dataset, plans = digits
    plan = plans["int8-dla"]
    one, _, _ = plan_logits(plan, dataset, EvalOptions(batches_per_shard=1))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        same, _, how = plan_logits(plan, dataset, EvalOptions(workers=2, cluster="local-ray", batches_per_shard=1))
        assert how.startswith("Ray")
        np.testing.assert_array_equal(one, same)

        killed = threading.Event()

        def kill_one_worker(done: int, total: int) -> None:
            if killed.is_set():
                return
            for proc in psutil.process_iter(["pid", "cmdline"]):
                if "ShardRunner" in " ".join(proc.info["cmdline"] or ()) and proc.info["pid"] != os.getpid():
                    proc.kill()
                    killed.set()
                    return

        from engine.evaluation.ray_cluster import run_ray
        from engine.evaluation.workers import job_for, make_shards

        job = job_for(plan, dataset)
        shards = make_shards(dataset.size, job.batch, 1)
        after_kill = run_ray(job, shards, "local-ray", 2, kill_one_worker)
        assert killed.is_set(), "no Ray worker process was found to kill"
        np.testing.assert_array_equal(one, after_kill)
    finally:
        ray.shutdown()


def test_eval_command_reports_and_writes_json(digits, tmp_path):
    paths, _, plans = digits
    plan = tmp_path / "fp32.engine"
    plan.write_bytes(plans["fp32"])
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "engine.cli", "eval", str(plan), "--data", paths["data"], "--labels",
           paths["labels"], "--json", str(out), "--confusion"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout and out.exists()
    bad = subprocess.run(cmd[:5] + ["--data", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "missing" in bad.stderr


def test_sweep_on_ray_equals_the_local_sweep():
    pytest.importorskip("ray")
    from engine.evaluation.ray_cluster import ray_map
    from engine.model_loading import load_network
    from scheduler.studies.sweep import run_sweep

    args = (load_network, "resnet18_small", "orin-agx-64gb", ["15W", "30W"], "int8", ("latency", "edp"), (0.1,))
    local = run_sweep(*args, workers=1)
    remote = run_sweep(*args, workers=2, map_tasks=ray_map("local-ray", 2))
    assert local["points"] == remote["points"] and local["front"] == remote["front"]

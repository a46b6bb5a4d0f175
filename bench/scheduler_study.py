"""ResNet-50 on Jetson AGX Orin 64GB at 30 W: placement policies and the latency-energy Pareto front.

For INT8 and FP16: gpu-only, dla-first (TensorRT's default), best-single-cut, optimal for latency,
energy and EDP, and the Pareto front over objectives (weighted lambda sweep) at 30 W. Every number is
on the simulated target clock (GPU: platform roofline; DLA: dla_sim through backends.dla). Writes
``bench/results/scheduler_orin30w.json`` and ``docs/img/scheduler_orin30w_{int8,fp16}_pareto.png``.

Run: ``python bench/scheduler_study.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model_loading import load_network  # noqa: E402
from scheduler.cost import build_cost_model  # noqa: E402
from scheduler.policies import run_policy  # noqa: E402
from scheduler.studies.sweep import dominated_or_on_front, run_sweep  # noqa: E402

PLATFORM, MODE = "orin-agx-64gb", "30W"
LAMBDAS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def study(precision: str) -> dict:
    net = load_network("resnet50")
    model = build_cost_model(net, PLATFORM, MODE, precision)
    rows = {}
    for name, policy, obj in (("gpu-only", "gpu-only", "latency"), ("dla-first", "dla-first", "latency"),
                              ("best-single-cut (latency)", "best-single-cut", "latency"),
                              ("optimal latency", "optimal", "latency"), ("optimal energy", "optimal", "energy"),
                              ("optimal EDP", "optimal", "edp")):
        p = run_policy(policy, model, obj)
        rows[name] = {"latency_ms": p.latency, "energy_mj": p.energy, "edp": p.latency * p.energy,
                      "transitions": p.transitions, "loadables": dict(p.loadables),
                      "dla_layers": sum(1 for k, v in p.devices.items() if v != "gpu" and not k.startswith("<")),
                      "solver": p.solver, "solve_ms": p.solve_time_s * 1e3}
    sweep = run_sweep(load_network, "resnet50", PLATFORM, [MODE], precision, lambdas=LAMBDAS, workers=1)
    points, front = sweep.pop("_points"), sweep.pop("_front")
    baselines = [p for p in points if p.policy in ("gpu-only", "dla-first")]
    n_dla = sum(1 for r in model.layers if r.dla_time_s is not None)
    first_reason = next((r.dla_reason for r in model.layers if r.dla_reason), "")
    return {"precision": precision, "gpu_clock": model.gpu_clock, "dla_clock": model.dla_clock,
            "notes": list(model.notes), "dla_supported_layers": n_dla,
            "layers": len(model.layers), "first_dla_reason": first_reason,
            "policies": rows, "front": sweep["front"],
            "front_covers_baselines": all(dominated_or_on_front(b, front) for b in baselines),
            "_points": points, "_front": front}


def main() -> None:
    results = {p: study(p) for p in ("int8", "fp16")}
    from scheduler.studies import plots

    for prec, r in results.items():
        plots.pareto_plot(r["_points"], r["_front"], str(ROOT / f"docs/img/scheduler_orin30w_{prec}_pareto.png"),
                          f"ResNet-50 {prec.upper()}, Orin AGX 64GB @ 30 W (simulated): policies and Pareto front")
    out = {p: {k: v for k, v in r.items() if not k.startswith("_")} for p, r in results.items()}
    out["platform"], out["power_mode"], out["clock"] = PLATFORM, MODE, "simulated target"
    (ROOT / "bench/results/scheduler_orin30w.json").write_text(json.dumps(out, indent=1))
    for prec, r in results.items():
        print(f"ResNet-50 {prec} on {PLATFORM} {MODE}: {r['dla_supported_layers']}/{r['layers']} layers DLA-capable"
              + (f" (first reason: {r['first_dla_reason'][:90]})" if r["dla_supported_layers"] == 0 else ""))
        print(f"  {'policy':<26} {'latency ms':>10} {'energy mJ':>10} {'EDP':>9} {'DLA layers':>10} {'trans.':>6}")
        for name, row in r["policies"].items():
            print(f"  {name:<26} {row['latency_ms']:>10.4f} {row['energy_mj']:>10.4f} {row['edp']:>9.3f} "
                  f"{row['dla_layers']:>10} {row['transitions']:>6}")
        print(f"  Pareto front: {len(r['front'])} points; contains or dominates gpu-only and dla-first: "
              f"{r['front_covers_baselines']}")


if __name__ == "__main__":
    main()

"""DLA additions to the ``hetrt`` command line, registered on the parser ``engine.cli`` builds:

* ``hetrt place MODEL --json [FILE]``: the placement as data for every policy
  (``scheduler.studies.place_json``, ``throughput_json`` and ``replicate``); ``-`` or no FILE prints
  JSON instead of the table.
* ``hetrt place MODEL --dla-layers CSV`` (and ``hetrt run PLAN --dla-layers CSV`` for a built plan's
  DLA loadables): per fused DLA layer statistics in the spirit of cuDLA's
  layer-wise statistics (``backends.dla.layerwise``), every DLA-capable layer on one core.
* ``hetrt place MODEL --policy replicate [--allow-gpu-fallback]``: whole images on the GPU and each
  DLA core at once with DRAM contention; throughput and power per combination of devices
  (``scheduler.studies.replicate``); with the flag, the layers a DLA core refuses run on the GPU.
* ``hetrt inspect capability MODEL [--platform P] [--fp16]`` (``engine/cli/inspect_capability.py``):
  every layer, the devices that run it, and why each refusing device refuses.
"""

from __future__ import annotations

import argparse
import json

from engine.ir.dtypes import Precision
from engine.ir.errors import BuildError
from engine.ir.fileio import atomic_write_text, check_writable


def register(sub: argparse._SubParsersAction) -> None:
    """Add the flags to ``place`` and ``run`` (wrapping their handlers); ``inspect capability`` is the topic
    module ``engine/cli/inspect_capability.py``."""
    place = sub.choices["place"]
    place.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                       help="write the placement as JSON to FILE ('-' or no FILE: print JSON instead of the table)")
    place.add_argument("--dla-layers", default=None, metavar="CSV",
                       help="write per fused DLA layer statistics (start/end, busy time per engine, SRAM, INT8, "
                            "sparsity), cuDLA layer-wise statistics style")
    place.add_argument("--allow-gpu-fallback", action="store_true",
                       help="--policy replicate: layers a DLA core refuses run on the GPU (TensorRT's "
                            "allowGPUFallback), sharing it with the GPU copy; without it such a DLA copy is excluded")
    for action in place._actions:
        if action.dest == "policy" and action.choices is not None and "replicate" not in action.choices:
            action.choices = (*action.choices, "replicate")
            action.help = (action.help or "") + "; replicate: whole images on the GPU and each DLA core at once"
    base_place = place.get_default("func")
    place.set_defaults(func=lambda args: cmd_place(args, base_place))
    run = sub.choices["run"]
    run.add_argument("--dla-layers", default=None, metavar="CSV",
                     help="write per fused DLA layer statistics of the plan's DLA partitions (simulated target "
                          "clock), cuDLA layer-wise statistics style")
    run.set_defaults(func=cmd_run)


def cmd_place(args: argparse.Namespace, base) -> int:
    """``hetrt place`` with --json (every policy), --dla-layers (optimal) and --policy replicate."""
    policy = getattr(args, "policy", None) or "optimal"
    if args.allow_gpu_fallback and policy != "replicate":
        raise BuildError("--allow-gpu-fallback applies to --policy replicate (the other policies place every "
                         "layer on a device that runs it)")
    if args.json is None and args.dla_layers is None and policy != "replicate":
        return base(args)
    from engine.cli_studies import place_formatter, place_json, place_policy_report

    if args.dla_layers is not None and (policy != "optimal" or len(args.model) != 1):
        raise BuildError("--dla-layers reports one model under --policy optimal")
    for path in (args.json, args.dla_layers):
        if path not in (None, "-"):
            check_writable(path)
    args.no_gpu_fallback = not args.allow_gpu_fallback
    policy, report = place_policy_report(args)
    if args.dla_layers is not None:
        from backends.dla.layerwise import layer_stats, to_csv
        from dla_sim.config import get_config
        from engine.cli_studies import _precision
        from engine.model_loading import load_network

        net = load_network(args.model[0], getattr(args, "batch", None))
        cfg = get_config(report.model.platform.dla_config, report.model.mode.name)
        atomic_write_text(args.dla_layers, to_csv(layer_stats(net, _precision(args), cfg)))
    if args.json == "-":
        print(json.dumps(place_json(policy, report), indent=1))
        return 0
    print(place_formatter(policy)(report))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(place_json(policy, report), indent=1))
        print(f"wrote {args.json}")
    if args.dla_layers is not None:
        print(f"wrote {args.dla_layers}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``hetrt run`` as before, then the per-layer statistics of the plan's DLA loadables, read from
    the engine that run loaded or built (the plan is built and deserialized once)."""
    from engine.cli.run import run_engine

    if args.dla_layers is not None:
        check_writable(args.dla_layers)
    rc, engine = run_engine(args)
    if args.dla_layers is None or rc:
        return rc
    from backends.dla.layerwise import loadable_stats, to_csv
    from dla_sim.config import get_config
    from scheduler.platforms import get_platform

    if not engine.loadables:
        raise BuildError(f"{args.model}: the plan has no DLA partition (build with --use-dla-core or a DLA "
                         f"placement)")
    placement = engine.placement or {}
    plat = get_platform(placement.get("platform") or engine.platform)
    cfg = get_config(plat.dla_config, placement.get("power_mode") or None)
    atomic_write_text(args.dla_layers, to_csv(loadable_stats(engine.loadables, cfg)))
    print(f"wrote {args.dla_layers}")
    return 0


def capability_report(model: str, platform: str, precision: Precision) -> str:
    """Every layer with the devices that can run it and each refusing device's reason."""
    from backends.dla import supports
    from dla_sim.config import get_config
    from engine.model_loading import load_network
    from scheduler.platforms import get_platform

    plat = get_platform(platform)
    net = load_network(model)
    if not plat.dla_config:
        raise BuildError(f"platform '{plat.name}' has no DLA")
    cfg = get_config(plat.dla_config)
    cores = [f"dla{k}" for k in range(plat.dla_cores)]
    w = max([len(la.name) for la in net.layers] + [5])
    lines = [f"capability of '{net.name}' on {plat.name} ({cfg.name} DLA x{plat.dla_cores}), {precision.value}",
             f"{'layer':<{w}}  {'kind':<15} devices"]
    n_dla = 0
    for la in net.layers:
        s = supports(la, net, precision, cfg)
        n_dla += s.ok
        devs = ["gpu", *cores] if s.ok else ["gpu"]
        why = "" if s.ok else f"  ({', '.join(cores)}: {s.reason})"
        lines.append(f"{la.name:<{w}}  {la.kind.value:<15} {','.join(devs)}{why}")
    lines.append(f"DLA-capable: {n_dla}/{len(net.layers)} layers ({100 * n_dla / max(len(net.layers), 1):.1f} %)")
    return "\n".join(lines)


__all__ = ["capability_report", "register"]

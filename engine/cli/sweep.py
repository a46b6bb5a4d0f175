"""``hetrt sweep``: latency-energy Pareto sweep over objectives, lambda and power modes."""

from __future__ import annotations

import argparse

from engine.cli.args import positive_int
from engine.cli.build import EPILOG_MODEL
from engine.cli.place import add_model_and_precision

NAME = "sweep"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="latency-energy Pareto front over objectives, lambda and power modes",
                       epilog=EPILOG_MODEL, description="Solve the exact placement for every objective and power "
                       "mode (in parallel over CPU cores, with a progress bar on a terminal) and write sweep.json, "
                       "pareto.png, placement.png, gantt.png (the min-EDP placement), gantt_fastest.png, "
                       "gantt_lowest_energy.png, gantt_dla_first.png and trace.json (Chrome/Perfetto) into DIR "
                       "(created when missing; each file written atomically).")
    add_model_and_precision(p)
    p.add_argument("--power-modes", default="all", help="comma-separated modes or 'all' (default)")
    p.add_argument("--objectives", default="latency,energy,edp,weighted", help="comma-separated objectives")
    p.add_argument("--lambdas", default=None,
                   help="comma-separated lambdas of the weighted objective (needs weighted in --objectives)")
    p.add_argument("--frames", type=positive_int, default=2, help="frames in the Gantt chart and trace (default 2)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes (default: min(modes, CPU cores))")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the power modes as Ray tasks: 'local-ray' or ray://HOST:PORT (hetrt[cluster])")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    return p


def run(args: argparse.Namespace) -> int:
    from engine.cli_studies import run_sweep_cmd

    print(run_sweep_cmd(args))
    return 0

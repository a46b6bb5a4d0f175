"""``hetrt dataset digits -o DIR``: the bundled digits data and a model trained on it (for hetrt eval)."""

from __future__ import annotations

import argparse

NAME = "dataset"


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("dataset", help="write the bundled digits dataset and a model trained on it",
                       description="Write scikit-learn's 8x8 digits (test and calibration splits as .npy batches, "
                                   "labels) and a CNN trained on them with JAX, for hetrt eval and INT8 builds.")
    d.add_argument("name", choices=("digits",), help="the dataset (digits: scikit-learn's 8x8 digits)")
    d.add_argument("-o", "--output", required=True, help="folder to write into")
    d.add_argument("--seed", type=int, default=0, help="seed of the split and of training (default 0)")
    return d


def cmd_dataset(args: argparse.Namespace) -> int:
    from engine.evaluation.bundled import write_digits

    paths = write_digits(args.output, seed=args.seed)
    for k, v in paths.items():
        print(f"{k:>7}: {v}")
    return 0


run = cmd_dataset

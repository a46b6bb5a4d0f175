"""Shared fixtures of the GPU tests."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """Fresh random data on every run; the seed is printed so that a failure can be replayed with
    HETRT_TEST_SEED=<seed>."""
    fixed = os.environ.get("HETRT_TEST_SEED")
    seed = int(fixed) if fixed else int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)

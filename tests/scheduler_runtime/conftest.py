"""Shared fixtures: plans and inputs of the scheduler runtime tests."""

from __future__ import annotations

import numpy as np
import pytest
from scheduler_runtime_plans import built_contents

from engine import plan as plan_format


@pytest.fixture(scope="session")
def gpu_plan() -> bytes:
    return plan_format.serialize(built_contents())


@pytest.fixture(scope="session")
def feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{"input": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(4)]

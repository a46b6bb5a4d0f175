"""onnx's own backend test suite run against hetrt (``engine.onnx_backend``).

Only the families in ``tests/onnx_conformance_lists.py`` are included: the node tests of every op
the parser claims, the nine ``light`` zoo models (build → plan → load → run), and the
PyTorch-converted/operator cases. Everything else is skipped by the runner ("no matched include
pattern"); known gaps inside included families are excluded with a reason.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import onnx.backend.test

from engine.onnx_backend import HetrtBackend

sys.path.insert(0, str(Path(__file__).parent))
from onnx_conformance_lists import EXCLUDE, MODEL_INCLUDE, NODE_INCLUDE  # noqa: E402

logging.getLogger("hetrt.onnx_parser").setLevel(logging.ERROR)  # opset conversions are expected here
warnings.filterwarnings("ignore", category=RuntimeWarning)

backend_test = onnx.backend.test.BackendTest(HetrtBackend, __name__)
for _patterns in list(NODE_INCLUDE.values()) + list(MODEL_INCLUDE.values()):
    for _p in _patterns:
        backend_test.include(_p)
for _p, _reason in EXCLUDE:
    backend_test.exclude(_p)

globals().update(backend_test.test_cases)

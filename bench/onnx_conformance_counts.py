"""Pass/fail/excluded counts of onnx's backend test suite on hetrt, by category.

Runs the cases of ``tests/test_onnx_conformance.py`` with unittest (CPU device only) and prints one
row per category: passed, failed (errors included), excluded (an EXCLUDE pattern with a reason)
and not claimed (no include pattern). ``--json PATH`` also writes the counts and failing names.

    python bench/onnx_conformance_counts.py [--json bench/results/onnx_conformance.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import unittest
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CATEGORIES = {
    "OnnxBackendNodeModelTest": "node",
    "OnnxBackendRealModelTest": "real (light models)",
    "OnnxBackendPyTorchConvertedModelTest": "pytorch-converted",
    "OnnxBackendPyTorchOperatorModelTest": "pytorch-operator",
    "OnnxBackendSimpleModelTest": "simple",
}


class _Result(unittest.TestResult):
    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, Counter] = defaultdict(Counter)
        self.failed: dict[str, list[str]] = defaultdict(list)

    def _cat(self, test: unittest.TestCase) -> str:
        return CATEGORIES.get(type(test).__name__, type(test).__name__)

    def addSuccess(self, test):  # noqa: N802 (unittest API)
        self.outcomes[self._cat(test)]["passed"] += 1

    def addFailure(self, test, err):  # noqa: N802
        self.outcomes[self._cat(test)]["failed"] += 1
        self.failed[self._cat(test)].append(test._testMethodName)

    addError = addFailure  # noqa: N815

    def addSkip(self, test, reason):  # noqa: N802
        if "device" in reason or test._testMethodName.endswith("_cuda"):
            return  # the CUDA twin of every case
        key = "excluded" if "exclude pattern" in reason else "not claimed" if "include pattern" in reason else "skipped"
        self.outcomes[self._cat(test)][key] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the counts to this file")
    args = parser.parse_args()

    import test_onnx_conformance as conformance

    suite = unittest.TestSuite()
    for case in conformance.backend_test.test_cases.values():
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    result = _Result()
    suite.run(result)

    cols = ["passed", "failed", "excluded", "not claimed"]
    print(f"{'category':24s}" + "".join(f"{c:>13s}" for c in cols))
    for cat in CATEGORIES.values():
        row = result.outcomes.get(cat, Counter())
        print(f"{cat:24s}" + "".join(f"{row[c]:13d}" for c in cols))
    for cat, names in result.failed.items():
        print(f"FAILED in {cat}: {', '.join(sorted(names))}")
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": {k: dict(v) for k, v in result.outcomes.items()},
                                               "failed": result.failed}, indent=2) + "\n")
    return 1 if any(result.failed.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())

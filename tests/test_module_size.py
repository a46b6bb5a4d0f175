"""Small modules with one job: the project's size rule, kept true where it holds today.

Modules of the IR (``engine/ir``), the reference backend, the GPU backend, the DLA lowering and the
shared layer table stay at most 600 lines, and their functions at most 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["engine/ir", "backends/reference", "backends/gpu", "backends/table.py", "backends/dla/lowering",
           "backends/dla/lower.py"]
MAX_MODULE, MAX_FUNCTION = 600, 80


def _files() -> list[Path]:
    out: list[Path] = []
    for entry in CHECKED:
        path = ROOT / entry
        out += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return out


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path):
    src = path.read_text()
    assert src.count("\n") <= MAX_MODULE, f"{path.relative_to(ROOT)} has {src.count(chr(10))} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(src))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    assert not long, f"{path.relative_to(ROOT)}: {long}"


def test_the_rule_sees_the_modules():
    names = {str(p.relative_to(ROOT)) for p in _files()}
    assert {"engine/ir/layers/base.py", "backends/gpu/lowering/table.py", "backends/reference/kernels.py",
            "backends/dla/lowering/table.py", "backends/dla/lower.py"} <= names

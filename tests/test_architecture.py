"""The import rules of docs/architecture.md hold: import-linter's contracts (pyproject.toml) and an
independent check that parses every import statement, top-level or inside a function."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "backends", "scheduler", "dla_sim")

# Who may import whom ("engine" is every engine module outside engine.ir).
ALLOWED = {
    "dla_sim": {"dla_sim"},
    "engine.ir": {"engine.ir"},
    "backends": {"backends", "dla_sim", "engine.ir"},
    "scheduler": {"scheduler", "backends", "dla_sim", "engine.ir"},
    "engine": {*PACKAGES, "engine.ir"},
}


def layer_of(module: str) -> str:
    return "engine.ir" if module == "engine.ir" or module.startswith("engine.ir.") else module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``source``, relative imports resolved, at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "engine":  # "from engine import x" names a module of engine: check the names
                yield node.lineno, target
            if node.module is None or target == "engine":
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    me = layer_of(module)
    out = []
    for line, target in imported(source, module, is_package):
        if target.split(".")[0] in PACKAGES and layer_of(target) not in ALLOWED[me]:
            out.append(f"{module}:{line}: {me} imports {target}")
    return out


def test_no_import_breaks_the_layering():
    bad = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            bad += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert bad == [], "\n".join(bad)


def test_the_check_sees_late_and_relative_imports():
    late = "def f():\n    from engine.runtime import Runtime\n"
    assert violations(late, "scheduler.cost") == ["scheduler.cost:2: scheduler imports engine.runtime"]
    assert violations("from .. import plan\n", "engine.ir.network") == [
        "engine.ir.network:1: engine.ir imports engine.plan"]
    assert violations("from engine import ir\nfrom engine.ir import dtypes\n", "backends.gpu.lower") == []
    assert violations("import scheduler.cost\n", "backends.dla.backend") == [
        "backends.dla.backend:1: backends imports scheduler.cost"]
    assert violations("from backends.gpu import lower\n", "dla_sim.ops") == [
        "dla_sim.ops:1: dla_sim imports backends.gpu"]
    assert violations("import numpy\nfrom engine.builder import Builder\n", "engine.cli") == []


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_the_contracts_name_every_engine_module_above_the_ir():
    above = {f"engine.{p.stem if p.is_file() else p.name}" for p in (ROOT / "engine").iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    above.discard("engine.ir")
    for cid in ("ir-at-the-bottom", "backends-on-the-ir", "scheduler-places"):
        listed = {m for m in _contracts()[cid]["forbidden_modules"] if m.startswith("engine.")}
        assert listed == above, f"contract {cid}: add {sorted(above - listed)}, remove {sorted(listed - above)}"


def test_import_linter_contracts_are_kept():
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True, no_logo=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in run.stdout

"""The README's plugin example works as written: its files, its commands and its error message."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Plugins (custom layers)", 1)[1].split("\n## ", 1)[0]


def test_readme_plugin_example(tmp_path):
    section = _section()
    files = re.findall(r"```python\n# (\S+\.py)[^\n]*\n(.*?)```", section, re.S)
    assert [f for f, _ in files] == ["my_plugins.py", "make_model.py"]
    for name, body in files:
        (tmp_path / name).write_text(body)
    commands = re.findall(r"```bash\n(.*?)```", section, re.S)[0].strip().splitlines()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    for line in commands:
        argv = shlex.split(line)
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "engine.cli", *argv[1:]]
        results.append(subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300))
    for r in results[:-1]:
        assert r.returncode == 0, r.stderr + r.stdout
    import numpy as np

    y = np.load(tmp_path / "y.npz")["y"]
    assert y.shape == (1, 4) and np.all(np.abs(y) <= 2.0) and np.any(y != 0)
    assert results[-1].returncode == 2
    documented = re.search(r"`(\[E\] PlanError:.*?)`", section, re.S).group(1)
    assert results[-1].stderr.strip() == " ".join(documented.split())

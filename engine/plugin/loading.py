"""Importing a user's plugin module (``--plugins FILE.py``): an explicit user action.

The module runs like any imported Python file, so it registers its plugins with
``engine.plugin.register``/``impl``. A file is imported at most once per process (by resolved
path), so a command that both builds and runs does not register its plugins twice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from engine.ir.errors import HetrtError

_LOADED: dict[Path, str] = {}


class PluginLoadError(HetrtError, ImportError):
    """A plugin file is missing or failed while being imported (names the file)."""


def load_plugin_file(path: str | Path) -> str:
    """Import the module at ``path`` once; returns its module name in ``sys.modules``."""
    resolved = Path(path).expanduser().resolve()
    if resolved in _LOADED:
        return _LOADED[resolved]
    if not resolved.is_file() or resolved.suffix != ".py":
        raise PluginLoadError(f"plugin file '{path}' does not exist or is not a .py file")
    name = f"hetrt_user_plugins_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"plugin file '{path}' cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's module: report which file failed and how
        sys.modules.pop(name, None)
        raise PluginLoadError(f"plugin file '{path}' failed to import: {type(e).__name__}: {e}") from e
    _LOADED[resolved] = name
    return name


def load_plugin_files(paths: Iterable[str | Path] | None) -> list[str]:
    return [load_plugin_file(p) for p in (paths or [])]

"""The parser (subcommands discovered as modules) and the one error boundary of the ``hetrt`` command.

Every failure a user can cause ends with exactly one ``[E] ...`` line on stderr naming the file, flag,
node or tensor: exit status 2 (1 is a FAILED comparison, 130 an interrupt). A closed stdout (``hetrt
inspect x.plan | head -1``) ends the command quietly, as unix tools do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from types import ModuleType

from engine.cli.args import Parser
from engine.ir.errors import HetrtError

COMMANDS = ("build", "run", "inspect", "compare", "demo", "place", "sweep", "surgeon", "debug")
NOT_COMMANDS = {"app", "args", "common"}
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PIPE = 2, 130, 141
OPTIONAL_DEPENDENCIES = {"onnxruntime": "onnxruntime", "matplotlib": "'hetrt[plots]'", "cupy": "'hetrt[gpu]'",
                         "jax": "'hetrt[jax]'", "tqdm": "tqdm"}


def _modules(prefix: str = "") -> list[ModuleType]:
    import engine.cli as package

    names = [n for n in COMMANDS if not prefix]
    names += sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                    if m.name not in names and m.name not in NOT_COMMANDS and m.name.startswith(prefix)
                    and not m.name.startswith("_") and (prefix or not m.name.startswith("inspect_")))
    mods = [importlib.import_module(f"engine.cli.{n}") for n in names]
    return [m for m in mods if all(hasattr(m, a) for a in ("add_parser", "run") if not prefix)]


def make_parser() -> argparse.ArgumentParser:
    from engine import __version__

    parser = Parser(prog="hetrt", description="hetrt: build, run and inspect inference plans (GPU + simulated DLA).",
                    epilog="Run 'hetrt COMMAND --help' for the options of each command. Exit status: 0 success, "
                           "1 a FAILED comparison, 2 an error (one '[E]' line on stderr), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"hetrt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in _modules():
        p = module.add_parser(sub)
        p.set_defaults(func=module.run)
    from engine.cli_dla import register as register_dla  # place --json/--dla-layers/replicate, run --dla-layers

    register_dla(sub)
    return parser


def _load_plugins(args: argparse.Namespace) -> None:
    """Import each ``--plugins FILE.py`` (trtexec's --plugins): the user asks for that code to run."""
    files = getattr(args, "plugins", None)
    if files:
        from engine.plugin import load_plugin_files

        load_plugin_files(files)


def _topic_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]] | None:
    """``hetrt inspect TOPIC ...`` for a topic module (e.g. inspect_capability.py)."""
    if len(argv) < 2 or argv[0] != "inspect":
        return None
    for module in _modules("inspect_"):
        if getattr(module, "TOPIC", None) == argv[1]:
            p = Parser(prog=f"hetrt inspect {argv[1]}", description=(module.__doc__ or "").strip().splitlines()[0])
            module.add_arguments(p)
            p.set_defaults(func=module.run)
            return p, argv[2:]
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _missing_dependency(e: ModuleNotFoundError) -> str:
    top = (e.name or "").split(".")[0]
    if top in OPTIONAL_DEPENDENCIES:
        return f"[E] this command needs the optional package '{top}', which is not installed: " \
               f"pip install {OPTIONAL_DEPENDENCIES[top]}"
    return f"[E] ModuleNotFoundError: {_one_line(e)} (a broken installation? reinstall hetrt)"


def _quiet_stdout() -> None:
    """After EPIPE: send the rest of stdout to /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            topic = _topic_parser(argv)
            parser, rest = topic if topic is not None else (make_parser(), argv)
            args = parser.parse_args(rest)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # overflow in fp16 etc. is part of the verdict
                import numpy as np

                with np.errstate(all="ignore"):
                    _load_plugins(args)
                    return args.func(args)
        except BrokenPipeError:
            _quiet_stdout()
            return EXIT_PIPE
    except SystemExit as e:  # argparse (--help, --version, a bad flag: its own one-line error)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_ERROR)
    except KeyboardInterrupt:
        print("[E] interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HetrtError as e:
        print(f"[E] {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    except ModuleNotFoundError as e:
        print(_missing_dependency(e), file=sys.stderr)
    except MemoryError:
        print("[E] out of memory (try a smaller --batch or model)", file=sys.stderr)
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(f"[E] {type(e).__name__}:{where} {_one_line(e.strerror or e)}", file=sys.stderr)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("HETRT_TRACEBACK"):
            raise
        print(f"[E] internal error, please report it: {type(e).__name__}: {_one_line(e)} "
              f"(HETRT_TRACEBACK=1 shows the traceback)", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

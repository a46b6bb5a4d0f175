"""The ``hetrt`` command: build, run, inspect, compare, demo, place, sweep, surgeon, debug.

Each subcommand is a module of this package exposing ``NAME``, ``add_parser(subparsers)`` and
``run(args) -> int``; modules listed in ``COMMANDS`` come first in ``--help``, and any other module of
the package with those three names is added after them, so a new subcommand needs no edit here.
``hetrt inspect TOPIC`` dispatches to a module ``inspect_<topic>.py`` exposing ``TOPIC``,
``add_arguments(parser)`` and ``run(args)``.
"""

from engine.cli.app import main, make_parser

__all__ = ["main", "make_parser"]

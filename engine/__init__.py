"""hetrt: a TensorRT-style inference engine (builder, runtime, parser, optimizer, CLI).

The IR every package shares lives in ``engine.ir``; the producer version is defined there.
"""

from engine.ir import __version__

__all__ = ["__version__"]

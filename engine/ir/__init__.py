"""hetrt's IR: the vocabulary every package speaks (network, layers, dtypes, errors, logger, INT8
annotations and integer arithmetic, the lifetime memory planner). It imports nothing else of hetrt.

``__version__`` is the producer version written into every plan file; it comes from the installed
package metadata and falls back to the source tree's version when hetrt runs uninstalled.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("hetrt")
except _metadata.PackageNotFoundError:
    __version__ = "0.1.0"

"""Plan verification: typed schema, resource limits, DLA loadables and GPU tactics (see checks.py)."""

from .checks import check_json_depth, verify_contents
from .dla_loadable import validate_loadable
from .gpu_tactics import validate_tactics
from .limits import DEFAULT_LIMITS, ResourceLimits
from .network import check_network

__all__ = ["DEFAULT_LIMITS", "ResourceLimits", "check_json_depth", "check_network", "validate_loadable",
           "validate_tactics", "verify_contents"]

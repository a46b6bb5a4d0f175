"""Resource limits a plan must stay under before anything is allocated or computed.

A plan is a few bytes of JSON that can describe tensors of any size: every count and size a plan
states is checked against these limits at load (and by the builder before it writes one), so a
tiny file cannot make hetrt allocate gigabytes or spin in arithmetic. The defaults are far above
what the engine's models need; a deployment may tighten them (``plan.deserialize(data, limits=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceLimits:
    # one tensor: the kernels index with 32-bit offsets (TensorRT's bound too); batch-256
    # MobileNetV2 / EfficientNet-B0 hold 308M-element activations, so 2**28 refused real plans
    max_tensor_elements: int = 2**31 - 1
    # weights plus the tensors live at one step, at their declared types (engine.ir.memory.
    # peak_live_bytes): the runtimes free or reuse a tensor after its last reader. Summed over all
    # tensors instead, ViT-B/16 at batch 256 needed 75 GB and real plans were refused
    max_total_bytes: int = 16 << 30
    max_layers: int = 100_000
    max_json_depth: int = 64  # nesting of the plan manifest and of DLA loadable manifests
    max_dim: int = 2**31 - 1  # one dimension (the runtime indexes with 32-bit integers)
    max_resize_axis: int = 1 << 16  # one output axis of a resize (its coordinates are exact rationals)
    max_resize_scale: float = float(1 << 16)  # resize scales within [1 / this, this]
    dla_dry_run_macs: int = 50_000_000  # DLA loadables up to this size run once on dla_sim at load

    def __post_init__(self) -> None:
        for name in ("max_tensor_elements", "max_total_bytes", "max_layers", "max_json_depth", "max_dim",
                     "max_resize_axis"):
            v = getattr(self, name)
            if type(v) is not int or v < 1:
                raise ValueError(f"ResourceLimits.{name} must be a positive integer, got {v!r}")
        if not self.max_resize_scale >= 1.0:
            raise ValueError(f"ResourceLimits.max_resize_scale must be >= 1, got {self.max_resize_scale!r}")


DEFAULT_LIMITS = ResourceLimits()

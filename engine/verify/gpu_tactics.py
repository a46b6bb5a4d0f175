"""GPU tactic names in a plan, checked against the kernels compiled into this hetrt.

The lowering looks a convolution's tactic up by layer name and launches the tile it names; a name
that parses but names no compiled tile (``igemm_7x13_w1x1_s9_k1``) or a split-K factor outside
1..16 would fail at the first execute, on the GPU. ``backends.gpu.tactics.compiled_tactic`` knows
the tile set; here every entry of the plan's tactics is checked with it at load.
"""

from __future__ import annotations

from typing import Any

from engine.ir.errors import PlanError
from engine.ir.layers import LayerKind
from engine.ir.network import Network

# layers the GPU lowers to its implicit-GEMM (tensor-core) kernels, each with a timed tactic
CONV_KINDS = frozenset({LayerKind.CONVOLUTION, LayerKind.DECONVOLUTION, LayerKind.FULLY_CONNECTED,
                        LayerKind.MATRIX_MULTIPLY})


def validate_tactics(tactics: Any, network: Network) -> None:
    if not isinstance(tactics, dict):
        raise PlanError(f"plan tactics must be an object, got {type(tactics).__name__}")
    if not tactics:
        return
    from backends.gpu.tactics import compiled_tactic

    kinds = {layer.name: layer.kind for layer in network.layers}
    for name, tactic in tactics.items():
        where = f"plan tactics: layer '{name}'"
        if name not in kinds:
            raise PlanError(f"{where}: no such layer")
        if kinds[name] not in CONV_KINDS:
            raise PlanError(f"{where}: a {kinds[name].value} layer has no GPU tactics")
        if not compiled_tactic(tactic):
            raise PlanError(f"{where}: tactic {tactic!r} is not a tactic of the compiled kernels")

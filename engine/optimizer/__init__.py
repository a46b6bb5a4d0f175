"""Graph optimizer: a pipeline of small, exact rewrites of a ``Network`` (TensorRT's layer fusion).

``optimize`` runs the passes on a copy of the network and reports every fusion and removal, and
sends each to ``log`` in the words of TensorRT's verbose build log.

Pipeline order, and why:

1. constant folding first, so later passes see constants as weights (and folding never meets a
   fused layer the reference would have to understand);
2. identity and dead-layer removal, so fusions see the real producer/consumer pairs (a Dropout
   between a conv and its BatchNorm would block the fold);
3. per-channel constant adds/multiplies (an exported Linear's bias, a layer scale) folded into
   the GEMM before it, then Scale (BatchNorm) folding into conv/deconv/FC, before any epilogue
   fusion: both must touch the raw GEMM output, which stops being true once an activation or
   residual is fused; then GELU recognition (the five-layer erf formula becomes one activation),
   so the activation fusion below can put it in a GEMM epilogue; then 3-D convolutions and
   rank-5 global pools become 2-D layers (after BatchNorm folded into the 3-D kernel, before the
   residual fusion that folds their per-tap sums into the 2-D convolutions); the decomposed
   LayerNorm of pre-opset-17 exports becomes one Normalization layer beside GELU recognition,
   before the pointwise fusion could take its Add / Sqrt / Div into a chain;
4. conv + residual add (+ activation) before conv + activation: the activation after an add
   belongs to the residual epilogue, and a conv that took a plain activation can no longer
   take a residual (act(conv) + r is not act(conv + r));
5. conv + activation, then pointwise chains: pointwise fusion takes what the GEMM epilogues did
   not claim (an activation after a multi-reader conv, chains of unary/elementwise ops);
   "After vertical fusions" is logged here;
6. shuffle elimination, after the fusions have removed the layers that kept shuffles apart;
7. horizontal 1x1 merge, which checks concat elimination's rule so it does not spoil an
   in-place concat, then concat elimination itself, last among the rewrites because any later
   rewrite could change the producers it relies on;
8. a final dead-layer removal for constants and branches the fusions orphaned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from engine.ir.network import Network
from engine.optimizer.passes import (
    concat,
    constant_folding,
    conv_activation,
    conv_residual,
    dead_layers,
    gelu,
    gemm_constants,
    horizontal_merge,
    identity,
    layernorm,
    pointwise,
    scale_folding,
    shuffles,
    transpose_sinking,
    volumetric,
)
from engine.optimizer.rewrite import Rewrite

__all__ = ["DEFAULT_PIPELINE", "OptimizeReport", "Rewrite", "Stage", "optimize", "stage"]

PassFn = Callable[[Network], list[Rewrite]]


@dataclass(frozen=True)
class Stage:
    """One pipeline step: a pass and the summary line (if any) the log shows after it."""

    name: str
    run: PassFn
    summary: str | None = None


DEFAULT_PIPELINE: tuple[Stage, ...] = (
    Stage("constant_folding", constant_folding.run, "After constant folding"),
    Stage("identity_removal", identity.run),
    Stage("dead_layer_removal", dead_layers.run, "After dead-layer removal"),
    Stage("gemm_constants", gemm_constants.run),
    Stage("scale_folding", scale_folding.run),
    Stage("gelu", gelu.run),
    Stage("layernorm", layernorm.run),
    Stage("volumetric", volumetric.run),
    Stage("transpose_sinking", transpose_sinking.run),
    Stage("conv_residual", conv_residual.run),
    Stage("conv_activation", conv_activation.run),
    Stage("pointwise", pointwise.run, "After vertical fusions"),
    Stage("shuffle_elimination", shuffles.run, "After shuffle elimination"),
    Stage("horizontal_merge", horizontal_merge.run, "After tensor merging"),
    Stage("concat_elimination", concat.run, "After concat removal"),
    Stage("final_dead_layer_removal", dead_layers.run, "After final dead-layer removal"),
)

STAGES: dict[str, Stage] = {s.name: s for s in DEFAULT_PIPELINE}


def stage(name: str) -> Stage:
    """The default pipeline's stage called ``name``."""
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown optimizer pass '{name}'; known: {', '.join(STAGES)}") from None


@dataclass
class OptimizeReport:
    """The optimized network and what was done to get it."""

    network: Network
    rewrites: list[Rewrite] = field(default_factory=list)
    layers_before: int = 0

    @property
    def layers_after(self) -> int:
        return len(self.network.layers)

    def by_pass(self) -> Counter[str]:
        return Counter(r.pass_name for r in self.rewrites)


def dla_aware(st: Stage) -> Stage:
    """``st``, but fusing into GEMM epilogues only activations a DLA also runs (a GELU stays its
    own layer): TensorRT fuses per device after placement, so a fusion must not decide placement."""
    if st.name != "conv_activation":
        return st
    from backends.dla.support import dla_runs_activation

    return replace(st, run=partial(conv_activation.run, fusable=dla_runs_activation))


def optimize(network: Network, log: Callable[[str], None] | None = None,
             passes: Sequence[str | Stage] | None = None, debug: bool = False,
             for_dla: bool = False) -> OptimizeReport:
    """Run ``passes`` (default: the full pipeline) on a copy of ``network``; ``for_dla`` for
    networks whose layers may be placed on a DLA (``dla_aware``).

    ``log`` receives one line per rewrite and a layer count after each phase. With ``debug``
    the network is validated after every pass, so a broken rewrite is caught where it happens.
    """
    emit = log or (lambda message: None)
    stages = DEFAULT_PIPELINE if passes is None else tuple(p if isinstance(p, Stage) else stage(p) for p in passes)
    if for_dla:
        stages = tuple(dla_aware(st) for st in stages)
    net = network.copy()
    report = OptimizeReport(net, layers_before=len(net.layers))
    emit(f"Original: {len(net.layers)} layers")
    for st in stages:
        rewrites = st.run(net)
        for r in rewrites:
            emit(r.message)
        report.rewrites.extend(rewrites)
        if debug:
            net.validate()
        if st.summary:
            emit(f"{st.summary}: {len(net.layers)} layers")
    return report

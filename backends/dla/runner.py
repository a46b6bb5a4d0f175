"""Functional execution of a DLA loadable on dla_sim, with the loadable's addressing applied.

dla_sim's simulator computes hardware ops on named tensors; concatenation and slicing by
addressing are not ops (the producers write into their slot of a larger cube, consumers read a
window of one), so this runner feeds the simulator maximal runs of fused hardware groups and, in
between, materializes views and assemblies exactly as the memory map lays them out. BDMA copies
move packed bytes in the DLA feature format through ``dla_sim.bdma``. Timing is not computed
here (``simulator.execute``): the whole loadable is timed once, in one
``simulate(..., timing_only=True)`` call.
"""

from __future__ import annotations

import numpy as np

from dla_sim import bdma, simulator
from dla_sim.config import DlaConfig
from dla_sim.formats import feature_layout, pack_feature, unpack_feature
from dla_sim.loadable import Loadable
from dla_sim.ops import BdmaOp, CubeDesc
from engine.ir.errors import ExecutionError

from .lower import Assembly, View


def _layout(c: CubeDesc):
    return feature_layout(c.n, c.c, c.h, c.w, c.precision.bytes, c.atom_bytes, c.line_stride, c.surface_stride)


def _bdma_copy(op: BdmaOp, ld: Loadable, env: dict[str, np.ndarray], cfg: DlaConfig) -> None:
    src_t, dst_t = op.inputs[0], op.outputs[0]
    src_c, dst_c = ld.tensors[src_t].cube, ld.tensors[dst_t].cube
    raw = pack_feature(np.ascontiguousarray(env[src_t]).astype(src_c.precision.dtype), _layout(src_c))
    out = bdma.run(op, raw, cfg=cfg)
    env[dst_t] = unpack_feature(out, _layout(dst_c))


class _Addressing:
    def __init__(self, ld: Loadable) -> None:
        self.views = [View.from_json(v) for v in ld.meta.get("views", [])]
        self.assemblies = [Assembly.from_json(a) for a in ld.meta.get("assemblies", [])]

    def resolve(self, env: dict[str, np.ndarray]) -> None:
        """Materialize every view/assembly whose source data is available (repeat: they nest)."""
        progress = True
        while progress:
            progress = False
            for v in list(self.views):
                if v.parent in env:
                    n0, c0, h0, w0 = v.start
                    n, c, h, w = v.shape
                    env[v.name] = np.ascontiguousarray(env[v.parent][n0:n0 + n, c0:c0 + c, h0:h0 + h, w0:w0 + w])
                    self.views.remove(v)
                    progress = True
            for a in list(self.assemblies):
                if all(p in env for p, _ in a.parts):
                    parts = sorted(a.parts, key=lambda pc: pc[1])
                    at = 0
                    for p, c0 in parts:
                        if c0 != at:
                            raise ExecutionError(f"assembly '{a.name}': part '{p}' at channel {c0}, expected {at}")
                        at += env[p].shape[1]
                    env[a.name] = np.concatenate([env[p] for p, _ in parts], axis=1)
                    self.assemblies.remove(a)
                    progress = True


def run(ld: Loadable, cfg: DlaConfig, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor the loadable computes from ``feeds`` (NCHW cubes in the hardware dtype)."""
    consts = {n: ld.blobs[t.blob] for n, t in ld.tensors.items() if t.blob is not None}
    env: dict[str, np.ndarray] = dict(feeds)
    addr = _Addressing(ld)
    addr.resolve(env)
    segment: list = []
    seg_out: set[str] = set()

    def flush() -> None:
        if not segment:
            return
        ops = [op for g in segment for op in g]
        need = {n for op in ops for n in op.inputs if n in env and n not in consts}
        env.update(simulator.execute(ops, cfg, {n: env[n] for n in need}, consts))
        segment.clear()
        seg_out.clear()
        addr.resolve(env)

    for group in simulator.group_ops(ld.ops):
        if isinstance(group[0], BdmaOp):
            flush()
            _bdma_copy(group[0], ld, env, cfg)
            addr.resolve(env)
            continue
        inner = {t for op in group for t in op.outputs}
        reads = {n for op in group for n in op.inputs if n not in consts and n not in inner}
        if any(n not in env and n not in seg_out for n in reads):
            flush()
            missing = [n for n in reads if n not in env]
            if missing:
                raise ExecutionError(f"loadable '{ld.name}': {missing} not available for {group[0].name!r}")
        segment.append(group)
        seg_out.update(t for op in group for t in op.outputs)
    flush()
    return env

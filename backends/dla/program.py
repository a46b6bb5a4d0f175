"""A lowered partition as a dla_sim Loadable: tensor table, memory map and addressing metadata.

Memory map (one DRAM region for features, one for constants, 64-B aligned): every feature cube
that is written to memory gets a slot; a producer whose output is a concatenation part writes at
its parent's address plus ``channel_offset / atom`` surfaces; a view (slice, split, crop, layout-
preserving reshape) sits at its parent's address plus its start offset. Tensors that never leave
the pipeline (CACC results, an SDP result consumed by an on-the-fly PDP) have size 0.

``meta`` carries what the runtime needs beside the ops: boundary inputs/outputs with IR shapes,
the I/O format, the views and assemblies (addressing), the IR layer that emitted each op, and for
INT8 partitions each boundary tensor's representation (``boundary``: int8 with its scale, or fp16).
"""

from __future__ import annotations

from dla_sim import simulator
from dla_sim.formats import IOFormat, align_up
from dla_sim.loadable import Loadable, TensorEntry
from dla_sim.ops import CubeDesc
from dla_sim.ops import Precision as HwPrecision
from engine.ir.network import Network

from .cubes import hw_precision
from .lower import Lowered

_ALIGN = 64


def io_format(precision: HwPrecision) -> IOFormat:
    """TensorRT's native DLA boundary formats: kCHW16 for FP16, kCHW32 for INT8."""
    return IOFormat.CHW16 if precision is HwPrecision.FP16 else IOFormat.CHW32


def boundary_formats(lowered: Lowered) -> dict[str, IOFormat]:
    """I/O format of every boundary tensor: kCHW32 for int8 cubes, kCHW16 for fp16 ones."""
    hp = hw_precision(lowered.precision)
    fmt = {t: io_format(hp) for t in (*lowered.inputs, *lowered.outputs)}
    fmt.update({t: io_format(r.precision) for t, r in lowered.reps.items()})
    return fmt


def flying_tensors(lowered: Lowered) -> set[str]:
    """Op outputs that stay inside a fused CONV -> SDP -> PDP pipeline (never in memory)."""
    out: set[str] = set()
    for group in simulator.group_ops(lowered.ops):
        for op in group[:-1]:
            out.update(op.outputs)
    return out


def _window_offset(parent: CubeDesc, start: tuple[int, int, int, int]) -> int:
    _, c0, h0, w0 = start
    return (c0 // parent.atom_c) * parent.surface_stride + h0 * parent.line_stride + w0 * parent.atom_bytes


def build_loadable(lowered: Lowered, network: Network, name: str, config_name: str) -> Loadable:
    hp = hw_precision(lowered.precision)
    flying = flying_tensors(lowered)
    views = {v.name: v for v in lowered.views}
    asm = {a.name: a for a in lowered.assemblies}
    slot_of: dict[str, tuple[str, int]] = {p: (a.name, c0) for a in lowered.assemblies for p, c0 in a.parts}
    cubes = dict(lowered.cubes)
    for op in lowered.ops:  # on-the-fly results have the shape of their op's output
        for t in op.outputs:
            cubes.setdefault(t, op.output if hasattr(op, "output") else cubes.get(op.inputs[0]))
    offsets: dict[str, int] = {}
    top = 0

    def offset(t: str) -> int:
        nonlocal top
        if t in offsets:
            return offsets[t]
        if t in slot_of:
            parent, c0 = slot_of[t]
            off = offset(parent) + (c0 // cubes[parent].atom_c) * cubes[parent].surface_stride
        elif t in views:
            v = views[t]
            off = offset(v.parent) + _window_offset(cubes[v.parent], v.start)
        else:
            off = top
            top = align_up(top + cubes[t].bytes, _ALIGN)
        offsets[t] = off
        return off

    entries: list[TensorEntry] = []
    for t, cube in cubes.items():
        if t in lowered.constants:
            continue
        if t in flying:
            entries.append(TensorEntry(t, "dram", 0, 0, "intermediate", cube))
            continue
        if t in views or t in asm:
            parts = (views[t].parent,) if t in views else tuple(p for p, _ in asm[t].parts)
            entries.append(TensorEntry(t, "dram", offset(t), cube.bytes, "view", cube, parts=parts))
            continue
        role = "input" if t in lowered.inputs else "output" if t in lowered.outputs else "intermediate"
        entries.append(TensorEntry(t, "dram", offset(t), cube.bytes, role, cube))
    ctop = 0
    for t, role in lowered.constants.items():
        blob = lowered.blobs[t]
        entries.append(TensorEntry(t, "dram", align_up(top, _ALIGN) + ctop, blob.nbytes, role, cubes.get(t), blob=t))
        ctop = align_up(ctop + blob.nbytes, _ALIGN)
    meta = {
        "precision": lowered.precision.value,
        "io_format": io_format(hp).value,
        "inputs": [[t, list(network.tensors[t].shape)] for t in lowered.inputs],
        "outputs": [[t, list(network.tensors[t].shape)] for t in lowered.outputs],
        "views": [v.to_json() for v in lowered.views],
        "assemblies": [a.to_json() for a in lowered.assemblies],
        "owners": list(lowered.owners),
        "fused": dict(lowered.fused),
        "boundary": {t: r.to_json() for t, r in lowered.reps.items()},
        "feature_bytes": top,
        "constant_bytes": ctop,
    }
    return Loadable(name, lowered.ops, entries, lowered.blobs, config_name=config_name, meta=meta)

"""Runs a list of DLA hardware operations: outputs, cycles, bytes, busy time, energy and a trace.

Execution model (hardware timing model):

* Hardware layers run one after another.  A fused group is a ConvOp followed by an on-the-fly SdpOp
  and optionally an on-the-fly PdpOp [HWARCH]; every other op is a group of its own.
* Ping-pong register groups: the next layer's registers are programmed while the current one runs,
  so consecutive groups start without a reconfiguration gap [HWARCH].  Each group still pays its first
  memory access latency and the CMAC pipeline fill (it cannot prefetch data that its predecessor
  writes).
* A group's duration is its long pole: max(compute cycles of every unit in it, cycles the memory
  interfaces need for the group's traffic) + latency.  Group traffic = the conv's CBUF-planned reads
  + the SDP's operand / eltwise reads + the write of the group's final output cube.
* Multi-core: ``cores=k`` splits the batch evenly over k DLA cores running the same op list in
  parallel; each core gets its own ``dram_share`` of SoC bandwidth and fetches its own weights;
  ops of a batch smaller than k (per-image layers such as image-mode first layers) are dealt out
  round-robin, costing 1/k of their time per core.
* Spreadsheet timing model: each conv group is costed by ``conv_core.spreadsheet_timing`` (its
  DRAM-only long-pole rule), with post-ops free, as in [PERF].
* ``batch`` (images per run; default ``program.batch`` or the largest op batch): an op whose batch
  N exceeds it (the sheet's batch-16 FC layers) is amortised, contributing cycles * batch / N;
  ``cycles_per_frame`` = sum of contributions / batch.

Functional mode computes every op bit-exactly (INT8) through the unit models; ``timing_only=True``
skips all arithmetic, and :func:`execute` computes the outputs without the timing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from . import conv_core, energy, memory, trace
from .config import DlaConfig
from .ops import BdmaOp, CdpOp, ConvOp, CubeDesc, HwOp, PdpOp, RubikOp, SdpOp, UnitTiming


@dataclass
class OpRecord:
    """One op in the trace: start/duration in cycles of its group, its own busy cycles and bytes."""

    name: str
    unit: str
    group: int
    start: float
    duration: float
    busy: float
    dram_bytes: int = 0
    sram_bytes: int = 0
    macs: int = 0
    bound: str = ""


@dataclass
class SimResult:
    config: str
    clock_mhz: float
    cores: int
    cycles: float
    cycles_per_frame: float
    frames: int
    unit_busy: dict[str, float]
    bytes: memory.ByteCounter
    energy: energy.EnergyReport
    records: list[OpRecord]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    macs: int = 0

    @property
    def time_s(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def time_ms(self) -> float:
        return self.time_s * 1e3

    @property
    def ms_per_frame(self) -> float:
        return self.cycles_per_frame / (self.clock_mhz * 1e3)

    @property
    def fps(self) -> float:
        """Images per second over all cores."""
        return 1e3 / self.ms_per_frame

    @property
    def utilisation(self) -> dict[str, float]:
        return {u: b / self.cycles if self.cycles else 0.0 for u, b in self.unit_busy.items()}

    def chrome_trace(self) -> dict:
        return trace.chrome_trace(self)


def group_ops(ops: Sequence[HwOp]) -> list[list[HwOp]]:
    """Split an op list into fused hardware layers (CONV -> SDP(flying) -> PDP(flying))."""
    groups: list[list[HwOp]] = []
    for op in ops:
        cur = groups[-1] if groups else None
        if isinstance(op, SdpOp) and op.source == "flying":
            if cur is None or not isinstance(cur[-1], ConvOp):
                raise ValueError(f"on-the-fly SDP {op.name!r} must directly follow a ConvOp")
            cur.append(op)
        elif isinstance(op, PdpOp) and op.source == "flying":
            if cur is None or not isinstance(cur[-1], SdpOp):
                raise ValueError(f"on-the-fly PDP {op.name!r} must directly follow an SDP")
            cur.append(op)
        else:
            groups.append([op])
    return groups


def _unit_module(op: HwOp):
    from . import bdma, cdp, pdp, rubik, sdp

    table = {SdpOp: sdp, PdpOp: pdp, CdpOp: cdp, RubikOp: rubik, BdmaOp: bdma}
    for cls, mod in table.items():
        if isinstance(op, cls):
            return mod
    raise NotImplementedError(f"no unit model for {type(op).__name__}")


def _split_batch(op: HwOp, cores: int) -> HwOp:
    """The same op on ceil(N / cores) images (the share of one core)."""
    kw = {}
    for f in fields(op):
        v = getattr(op, f.name)
        if isinstance(v, CubeDesc):
            kw[f.name] = v.with_(n=math.ceil(v.n / cores))
    return replace(op, **kw) if kw else op


def _frames(op: HwOp) -> int:
    for name in ("output", "input"):
        c = getattr(op, name, None)
        if isinstance(c, CubeDesc):
            return c.n
    return 1


def _group_timing(group: list[HwOp], cfg: DlaConfig) -> tuple[float, dict[str, float], UnitTiming, str]:
    """(duration, busy cycles per unit, traffic as a UnitTiming, bound) of one fused group."""
    head, last = group[0], group[-1]
    if not isinstance(head, ConvOp):
        t = _unit_module(head).timing(head, cfg)
        return float(t.cycles), {t.unit: float(t.compute_cycles or t.cycles)}, t, "unit"
    if cfg.timing_model == "spreadsheet":
        elt = any(isinstance(o, SdpOp) and o.eltwise is not None for o in group)
        t = conv_core.spreadsheet_timing(head, cfg, out=last.output, eltwise=elt)
        busy = {"conv": t.compute_cycles}
        return t.cycles, busy, t, t.notes[-1]
    ct = conv_core.timing(head, cfg)
    busy = {"conv": ct.compute_cycles}
    rd_dram, rd_sram = ct.dram_read_bytes, ct.sram_read_bytes
    for op in group[1:]:
        ut = _unit_module(op).timing(op, cfg)
        busy[ut.unit] = busy.get(ut.unit, 0.0) + float(ut.compute_cycles or ut.cycles)
        if isinstance(op, SdpOp):  # operands and eltwise input come from memory
            rd_dram += ut.dram_read_bytes
            rd_sram += ut.sram_read_bytes
    out = last.output
    wr_dram = out.payload_bytes if out.memory == "dram" else 0
    wr_sram = out.payload_bytes if out.memory == "sram" else 0
    mem = memory.transfer_cycles(cfg, rd_dram + wr_dram, rd_sram, wr_sram)
    lat = memory.access_latency(cfg, bool(rd_dram), bool(rd_sram)) + cfg.conv.pipeline_latency
    compute = max(busy.values())
    bound = max(busy, key=busy.get) if compute >= mem else "memory"
    traffic = UnitTiming(
        unit="group", cycles=max(compute, mem) + lat, compute_cycles=compute,
        dram_read_bytes=rd_dram, dram_write_bytes=wr_dram, sram_read_bytes=rd_sram, sram_write_bytes=wr_sram,
        macs=head.macs,
    )
    return max(compute, mem) + lat, busy, traffic, bound


def _run_group(group: list[HwOp], env: dict[str, np.ndarray], cfg: DlaConfig) -> None:
    head = group[0]
    if isinstance(head, ConvOp):
        x, w = env[head.inputs[0]], env[head.inputs[1]]
        if len(group) == 1:
            bias = env[head.inputs[2]] if head.has_bias else None
            env[head.outputs[0]] = conv_core.run(head, x, w, bias, cfg=cfg)
            return
        val = conv_core.accumulate(head, x, w, cfg=cfg)
        for op in group[1:]:
            mod = _unit_module(op)
            if isinstance(op, SdpOp):
                val = mod.run(op, val, *(env[n] for n in op.inputs[1:]), cfg=cfg)
            else:
                val = mod.run(op, val, cfg=cfg)
            env[op.outputs[0]] = val
        return
    mod = _unit_module(head)
    env[head.outputs[0]] = mod.run(head, *(env[n] for n in head.inputs), cfg=cfg)


def _constants(program) -> dict[str, np.ndarray]:
    """Constant tensors of a loadable (entries with a blob: weights, operands), by tensor name."""
    blobs = getattr(program, "blobs", None)
    entries = getattr(program, "tensors", None)
    if blobs is None or not entries:
        return {}
    return {name: blobs[t.blob] for name, t in entries.items() if getattr(t, "blob", None) is not None}


def execute(
    program, cfg: DlaConfig, inputs: dict[str, np.ndarray], tensors: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Functional results of ``program`` without its timing: every op output (and the inputs), by
    tensor name — the same arrays as ``simulate(...).outputs``. For callers that time a program
    once and then run it many times."""
    ops = list(getattr(program, "ops", program))
    if tensors is None:
        tensors = _constants(program)
    env: dict[str, np.ndarray] = {**tensors, **inputs}
    for group in group_ops(ops):
        _run_group(group, env, cfg)
    return {k: v for k, v in env.items() if k not in tensors}


def simulate(
    program,
    cfg: DlaConfig,
    inputs: dict[str, np.ndarray] | None = None,
    tensors: dict[str, np.ndarray] | None = None,
    *,
    timing_only: bool = False,
    cores: int = 1,
    batch: int | None = None,
) -> SimResult:
    """Simulate ``program``: a sequence of HwOps, or a ``dla_sim.loadable.Loadable`` (its ops, and its
    constant tensors from the blobs).

    Functional mode needs ``inputs`` (and the constant ``tensors``: weights, biases); it returns every
    op output in ``SimResult.outputs``.  With ``cores > 1`` only timing is split (outputs are computed
    on the whole batch).
    """
    ops = list(getattr(program, "ops", program))
    if tensors is None:
        tensors = _constants(program)
    if cores < 1 or cores > cfg.cores and cfg.timing_model != "spreadsheet":
        raise ValueError(f"{cfg.name} has {cfg.cores} DLA core(s); asked for {cores}")
    groups = group_ops(ops)
    env: dict[str, np.ndarray] = {}
    if not timing_only:
        if inputs is None:
            raise ValueError("functional simulation needs input arrays (or pass timing_only=True)")
        env.update(tensors)
        env.update(inputs)
    t = 0.0
    per_frame = 0.0
    busy: dict[str, float] = {}
    counter = memory.ByteCounter()
    records: list[OpRecord] = []
    energies = energy.EnergyAccumulator(cfg)
    macs = 0
    frames = batch or getattr(program, "batch", None) or max((_frames(g[0]) for g in groups), default=1)
    for gi, group in enumerate(groups):
        core_group = [_split_batch(op, cores) for op in group] if cores > 1 else group
        dur, gbusy, traffic, bound = _group_timing(core_group, cfg)
        n_op = _frames(group[0])
        if cores > 1 and n_op < cores:  # per-image layers are dealt out round-robin to the cores
            k = 1.0 / cores
            dur *= k
            gbusy = {u: b * k for u, b in gbusy.items()}
            traffic = replace(
                traffic, dram_read_bytes=int(traffic.dram_read_bytes * k),
                dram_write_bytes=int(traffic.dram_write_bytes * k),
                sram_read_bytes=int(traffic.sram_read_bytes * k), sram_write_bytes=int(traffic.sram_write_bytes * k),
                compute_cycles=traffic.compute_cycles * k, macs=int(traffic.macs * k),
            )
        if not timing_only:
            _run_group(group, env, cfg)
        counter.add(replace(traffic, unit=group[0].unit))
        energies.add_group(core_group, traffic, cfg)
        for op in core_group:
            u = op.unit
            b = gbusy.get(u, 0.0)
            busy[u] = busy.get(u, 0.0) + b
            m = op.macs if isinstance(op, ConvOp) else 0
            if cores > 1 and n_op < cores:
                m //= cores
            macs += m
            is_head = op is core_group[0]
            records.append(OpRecord(
                name=op.name or u, unit=u, group=gi, start=t, duration=dur, busy=b,
                dram_bytes=traffic.dram_bytes if is_head else 0, sram_bytes=traffic.sram_bytes if is_head else 0,
                macs=m, bound=bound,
            ))
        t += dur
        per_frame += dur * (frames / n_op if n_op > frames else 1.0)
    cycles = t
    per_frame /= frames
    counter_total = counter
    if cores > 1:  # every core moves its share of bytes; report the SoC total
        counter_total = memory.ByteCounter(
            counter.dram_read * cores, counter.dram_write * cores, counter.sram_read * cores,
            counter.sram_write * cores, {k: v * cores for k, v in counter.per_unit.items()},
        )
    rep = energies.report(cycles, cores)
    outputs = {} if timing_only else {k: v for k, v in env.items() if k not in tensors}
    return SimResult(
        config=cfg.name, clock_mhz=cfg.clock_mhz, cores=cores, cycles=cycles, cycles_per_frame=per_frame,
        frames=frames, unit_busy=busy, bytes=counter_total, energy=rep, records=records, outputs=outputs,
        macs=macs * cores,
    )

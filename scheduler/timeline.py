"""The simulated target timeline of a placement: per-device lanes, transitions, DRAM contention.

Clock: simulated (the target SoC: DLA times from dla_sim via the cost model, GPU times from the
platform model or host measurement). Model:

* Every layer is a job on its device's lane (gpu, dla0, dla1); a lane runs its jobs in order
  (frame, execution order) -- one CUDA stream, one DLA submission queue per core. A job is ready
  when each input tensor has arrived: its producer ended, plus one hand-off (the cost model's
  transition) when the producer sat on another device; a tensor moves once per destination device.
* Frames (pipelining) are all released at time 0; frame f+1's first layer starts as soon as its
  lane is free, so devices overlap across frames.
* DRAM contention (the platforms' stated rule): a running job demands ``bytes / alone-time`` of
  bandwidth; while the running jobs' demands sum above the mode's effective bandwidth B, every one
  progresses at ``B / sum(demand)`` of its alone speed (each gets a demand-proportional share).
  Hand-offs are latency on the dependency edge and add no demand (their bytes are small next to a
  layer's; stated simplification). Contention stretches time, not dynamic energy.
* Energy per frame = dynamic energy of its layers and hand-offs + all rails' static power x
  makespan / frames; average power = energy per frame / (makespan / frames).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .cost import CostModel
from .costgraph import GPU, Tensor

LANES = ("gpu", "dla0", "dla1")


@dataclass(frozen=True)
class TimelineEvent:
    lane: str  # gpu | dla0 | dla1 | transfer
    name: str
    frame: int
    start_s: float
    end_s: float
    alone_s: float  # duration without contention (== end - start for transfers)


@dataclass(frozen=True)
class Timeline:
    platform: str
    power_mode: str
    frames: int
    events: tuple[TimelineEvent, ...]
    makespan_s: float
    first_frame_latency_s: float
    energy_per_frame_j: float
    dynamic_energy_per_frame_j: float
    static_power_w: float
    contention_s: float  # total stretch of all jobs due to DRAM sharing

    @property
    def period_s(self) -> float:
        return self.makespan_s / self.frames

    @property
    def average_power_w(self) -> float:
        return self.energy_per_frame_j / self.period_s if self.period_s > 0 else 0.0

    @property
    def throughput_fps(self) -> float:
        return self.frames / self.makespan_s if self.makespan_s > 0 else float("inf")

    def summary(self) -> dict:
        return {"clock": "simulated target", "platform": self.platform, "power_mode": self.power_mode,
                "frames": self.frames, "makespan_ms": self.makespan_s * 1e3,
                "latency_ms": self.first_frame_latency_s * 1e3, "period_ms": self.period_s * 1e3,
                "throughput_fps": self.throughput_fps, "energy_per_inference_mj": self.energy_per_frame_j * 1e3,
                "dynamic_energy_per_inference_mj": self.dynamic_energy_per_frame_j * 1e3,
                "average_power_w": self.average_power_w, "contention_ms": self.contention_s * 1e3}

    def chrome_trace(self) -> dict:
        """Chrome/Perfetto trace-event JSON (load in ui.perfetto.dev or chrome://tracing)."""
        tids = {lane: i for i, lane in enumerate((*LANES, "transfer"))}
        ev: list[dict] = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": lane}}
                          for lane, i in tids.items()]
        ev.append({"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
                   "args": {"name": f"{self.platform} {self.power_mode} (simulated)"}})
        for e in self.events:
            ev.append({"name": e.name, "cat": e.lane, "ph": "X", "pid": 1, "tid": tids[e.lane],
                       "ts": e.start_s * 1e6, "dur": (e.end_s - e.start_s) * 1e6,
                       "args": {"frame": e.frame, "alone_us": e.alone_s * 1e6}})
        return {"traceEvents": ev, "displayTimeUnit": "ms"}

    def write_chrome_trace(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.chrome_trace(), f)


def simulate_timeline(model: CostModel, devices: Mapping[str, str], frames: int = 1) -> Timeline:
    """Simulate ``frames`` inferences of the placement ``devices`` (layer -> gpu|dla0|dla1)."""
    if frames < 1:
        raise ValueError("frames must be >= 1")
    g = model.graph
    platform, mode = model.platform, model.mode
    bandwidth = mode.dram_gbps * 1e9 * platform.gpu.bandwidth_efficiency
    pseudo = {n.name for n in g.nodes if n.pseudo}
    dev = {n.name: (devices.get(n.name, GPU) if n.name not in pseudo else GPU) for n in g.nodes}
    # per layer: (alone seconds, dynamic joules, demand bytes/s)
    cost: dict[str, tuple[float, float, float]] = {}
    for n in g.nodes:
        if n.pseudo:
            continue
        d = dev[n.name]
        if not n.supports(d):
            raise ValueError(f"layer {n.name!r} cannot run on {d}: {n.why_not(d)}")
        t = n.time[d] / 1e3
        cost[n.name] = (t, n.energy[d] / 1e3, n.dram_share.get(d, 0.0) * mode.dram_gbps * 1e9)
    inputs_of: dict[str, list[Tensor]] = {n.name: [] for n in g.nodes}
    for t in g.tensors:
        for c in t.consumers:
            inputs_of[c].append(t)
    order = [n.name for n in g.nodes if n.name not in pseudo]
    queues = {lane: [(f, name) for f in range(frames) for name in order if dev[name] == lane] for lane in LANES}
    end: dict[tuple[int, str], float] = {}
    for f in range(frames):
        for n in g.nodes:
            if n.pseudo and not inputs_of[n.name]:  # a network input: there at time 0
                end[(f, n.name)] = 0.0
    events: list[TimelineEvent] = []
    moved: dict[tuple[int, str, str], float] = {}  # (frame, tensor, dest) -> arrival
    dyn = 0.0

    def arrival(f: int, tensor: Tensor, dest: str) -> float | None:
        nonlocal dyn
        producer = tensor.producer
        if (f, producer) not in end:
            return None
        src = dev[producer]
        if src == dest:
            return end[(f, producer)]
        key = (f, tensor.name, dest)
        if key not in moved:
            dt, de = (x / 1e3 for x in g.tensor_transfer(tensor, src, dest))  # ms, mJ -> s, J
            s = end[(f, producer)]
            moved[key] = s + dt
            dyn += de
            events.append(TimelineEvent("transfer", f"{tensor.name} {src}->{dest}", f, s, s + dt, dt))
        return moved[key]

    def ready_time(f: int, name: str) -> float | None:
        r = 0.0
        for tensor in inputs_of[name]:
            a = arrival(f, tensor, dev[name])
            if a is None:
                return None
            r = max(r, a)
        return r

    head = {lane: 0 for lane in LANES}
    running: dict[str, list] = {}  # lane -> [frame, name, start, remaining_alone_s, demand]
    now = 0.0
    contention = 0.0
    total_jobs = sum(len(q) for q in queues.values())
    done = 0
    while done < total_jobs:
        for lane in LANES:  # start every lane head that is ready now
            if lane in running or head[lane] >= len(queues[lane]):
                continue
            f, name = queues[lane][head[lane]]
            r = ready_time(f, name)
            if r is not None and r <= now + 1e-15:
                t, e, demand = cost[name]
                running[lane] = [f, name, now, t, demand]
                dyn += e
        total_demand = sum(j[4] for j in running.values())
        rate = 1.0 if total_demand <= bandwidth or total_demand == 0 else bandwidth / total_demand
        next_t = float("inf")
        for j in running.values():
            next_t = min(next_t, now + j[3] / rate)
        for lane in LANES:
            if lane in running or head[lane] >= len(queues[lane]):
                continue
            f, name = queues[lane][head[lane]]
            r = ready_time(f, name)
            if r is not None and r > now:
                next_t = min(next_t, r)
        if next_t == float("inf"):
            raise RuntimeError("timeline simulation stalled (a dependency is never produced)")
        step = next_t - now
        for lane in list(running):
            j = running[lane]
            j[3] -= step * rate
            if j[3] <= 1e-15:
                f, name, start = j[0], j[1], j[2]
                alone = cost[name][0]
                events.append(TimelineEvent(lane, name, f, start, next_t, alone))
                contention += (next_t - start) - alone
                end[(f, name)] = next_t
                del running[lane]
                head[lane] += 1
                done += 1
        now = next_t
    finish = [0.0] * frames
    for f in range(frames):
        for n in g.nodes:
            if n.pseudo and inputs_of[n.name]:  # a network output: read back on the GPU
                for tensor in inputs_of[n.name]:
                    finish[f] = max(finish[f], arrival(f, tensor, GPU))
        finish[f] = max([finish[f]] + [e.end_s for e in events if e.frame == f])
    makespan = max(finish) if finish else 0.0
    static = g.static_power
    dyn_per_frame = dyn / frames
    energy = dyn_per_frame + static * makespan / frames
    events.sort(key=lambda e: (e.start_s, e.lane))
    return Timeline(platform.name, mode.name, frames, tuple(events), makespan, finish[0], energy, dyn_per_frame,
                    static, contention)


def lanes_used(events: Sequence[TimelineEvent]) -> list[str]:
    return [lane for lane in (*LANES, "transfer") if any(e.lane == lane for e in events)]

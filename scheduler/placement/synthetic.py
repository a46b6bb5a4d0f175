"""Seeded synthetic placement problems for property tests, benchmarks and what-if studies.

Times and energies are drawn in plausible Jetson ranges (GPU faster per layer but several times
the power of a DLA core), a fraction of layers is DLA-unsupported with a TensorRT-like reason, and
transfers cost a fixed hand-off plus a per-byte term that depends on the direction.
"""

from __future__ import annotations

import numpy as np

from scheduler.costgraph import DLA0, DLA1, GPU, CostGraph, LinkCost, Node, Tensor, TransitionTable

DLA_REASONS = (
    "kernel 33x33 > 32",
    "GroupNormalization is not supported on DLA",
    "dilation 4 with padding > kernel size",
    "INT8 scale is not per-tensor",
    "Resize mode 'cubic' is not supported on DLA",
    "more than 4 inputs to Concatenation",
)


def _link(rng: np.random.Generator) -> LinkCost:
    return LinkCost(
        time_fixed=float(rng.uniform(0.005, 0.08)),
        time_per_byte=float(rng.uniform(0.2e-7, 2e-7)),
        energy_fixed=float(rng.uniform(0.005, 0.1)),
        energy_per_byte=float(rng.uniform(0.5e-7, 3e-7)),
    )


def random_transitions(rng: np.random.Generator, explicit_dla_to_dla: bool = False) -> TransitionTable:
    return TransitionTable(_link(rng), _link(rng), _link(rng) if explicit_dla_to_dla else None)


def _node(
    rng: np.random.Generator, name: str, unsupported: bool, identical_cores: bool, gpu_unsupported: bool = False
) -> Node:
    tg = float(rng.uniform(0.02, 1.0))
    pg = float(rng.uniform(6.0, 15.0))
    td = tg * float(rng.uniform(0.5, 3.0))
    pd = float(rng.uniform(0.8, 3.0))
    time: dict[str, float | None] = {GPU: tg, DLA0: td, DLA1: td}
    energy: dict[str, float | None] = {GPU: tg * pg, DLA0: td * pd, DLA1: td * pd}
    reason: dict[str, str] = {}
    if not identical_cores:
        f = float(rng.uniform(0.8, 1.25))
        time[DLA1] = td * f
        energy[DLA1] = td * f * pd * float(rng.uniform(0.8, 1.25))
        if rng.random() < 0.1:
            time[DLA1] = None
            reason[DLA1] = "dla1 runs at a lower clock in this power mode"
    if unsupported:
        why = DLA_REASONS[int(rng.integers(len(DLA_REASONS)))]
        time[DLA0] = time[DLA1] = None
        reason[DLA0] = reason[DLA1] = why
    if gpu_unsupported:
        time[GPU] = None
        reason[GPU] = "DLA-only custom layer"
    return Node(name, time, energy, reason, {d: float(rng.uniform(0.1, 0.7)) for d in (GPU, DLA0, DLA1)})


def random_dag(
    seed: int,
    n: int,
    identical_cores: bool = True,
    unsupported_fraction: tuple[float, float] = (0.1, 0.3),
    gpu_unsupported_prob: float = 0.0,
    static_power: bool = True,
) -> CostGraph:
    """A random network of ``n`` layers with chains, branches, residual joins and fan-out."""
    rng = np.random.default_rng(seed)
    frac = float(rng.uniform(*unsupported_fraction))
    k_unsup = int(round(frac * n))
    unsup = set(rng.choice(n, size=k_unsup, replace=False).tolist()) if k_unsup else set()
    nodes = []
    for i in range(n):
        gpu_bad = i not in unsup and rng.random() < gpu_unsupported_prob
        nodes.append(_node(rng, f"L{i}", i in unsup, identical_cores, gpu_bad))
    inputs: dict[int, set[int]] = {i: set() for i in range(n)}
    for i in range(1, n):
        main = i - 1 if rng.random() < 0.7 else int(rng.integers(0, i))
        inputs[i].add(main)
        if i >= 2 and rng.random() < 0.3:  # residual / concat join
            inputs[i].add(int(rng.integers(0, i)))
    tensors = []
    for p in range(n):
        cons = tuple(f"L{c}" for c in range(p + 1, n) if p in inputs[c])
        if cons:
            tensors.append(Tensor(f"t{p}", f"L{p}", cons, int(2 ** rng.integers(10, 21))))
    power = (
        {GPU: float(rng.uniform(0.5, 2.0)), DLA0: float(rng.uniform(0.1, 0.5)), DLA1: float(rng.uniform(0.1, 0.5))}
        if static_power
        else {}
    )
    if identical_cores:
        power[DLA1] = power.get(DLA0, 0.0)
    return CostGraph(nodes, tensors, random_transitions(rng, not identical_cores), power, name=f"dag{seed}")


def resnet_like(seed: int, n_layers: int = 300, unsupported_fraction: float = 0.1) -> CostGraph:
    """A ResNet-style network: stem, then residual blocks conv-relu-conv-(projection)-add-relu."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    inputs: dict[str, list[str]] = {}

    def add(name: str, ins: list[str]) -> str:
        names.append(name)
        inputs[name] = ins
        return name

    x = add("stem_conv", [])
    x = add("stem_relu", [x])
    x = add("stem_pool", [x])
    b = 0
    while len(names) + 6 <= n_layers:
        down = b % 4 == 0 and b > 0
        c1 = add(f"b{b}_conv1", [x])
        r1 = add(f"b{b}_relu1", [c1])
        c2 = add(f"b{b}_conv2", [r1])
        skip = add(f"b{b}_proj", [x]) if down else x
        s = add(f"b{b}_add", [c2, skip])
        x = add(f"b{b}_relu2", [s])
        b += 1
    while len(names) < n_layers:
        x = add(f"head{len(names)}", [x])
    n = len(names)
    unsup = set(rng.choice(n, size=int(round(unsupported_fraction * n)), replace=False).tolist())
    nodes = [_node(rng, nm, i in unsup, True) for i, nm in enumerate(names)]
    consumers: dict[str, list[str]] = {nm: [] for nm in names}
    for nm in names:
        for i in inputs[nm]:
            consumers[i].append(nm)
    tensors = [
        Tensor(f"{nm}:0", nm, tuple(consumers[nm]), int(2 ** rng.integers(14, 22))) for nm in names if consumers[nm]
    ]
    power = {GPU: 1.5, DLA0: 0.3, DLA1: 0.3}
    return CostGraph(nodes, tensors, random_transitions(rng), power, name=f"resnet{seed}")

"""Per-layer device pins (trtexec's ``--layerDeviceTypes``): a cost model in which a pinned layer can
run only on the pinned device, so every policy and solver honours the pin.

Pins name layers of the built network or the ONNX nodes they came from (``Layer.origin``); ``gpu``
forbids the DLA cores, ``dla`` forbids the GPU (a layer the DLA cannot run is then an error that
says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from engine.ir.errors import BuildError
from engine.ir.network import Network

from .cost import CostModel
from .costgraph import DEVICES, DLA_CORES, GPU, CostGraph

PIN_DEVICES = ("gpu", "dla")


def resolve_pins(network: Network, pins: Mapping[str, str]) -> dict[str, str]:
    """Layer name -> 'gpu' | 'dla' for every layer whose name or origin is pinned; unknown names are errors."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for layer in network.layers:
        key = next((k for k in (layer.name, *layer.origin) if k in pins), None)
        if key is not None:
            out[layer.name] = pins[key]
            used.add(key)
    for name, device in pins.items():
        if device not in PIN_DEVICES:
            raise BuildError(f"layer device '{name}:{device}': the device must be gpu or dla")
        if name not in used:
            raise BuildError(f"layer device given for '{name}', which is not a layer or node of the network")
    return out


def pin_devices(model: CostModel, layer_devices: Mapping[str, str]) -> CostModel:
    """``model`` with pinned layers restricted to their device."""
    if not layer_devices:
        return model
    g = model.graph
    nodes = []
    for n in g.nodes:
        want = layer_devices.get(n.name)
        if want is None or n.pseudo:
            nodes.append(n)
            continue
        drop = set(DLA_CORES) if want == "gpu" else {GPU}
        if want == "dla" and not any(n.supports(d) for d in DLA_CORES):
            raise BuildError(f"layer '{n.name}' is pinned to the DLA but the DLA cannot run it: "
                             f"{n.why_not(DLA_CORES[0])}")
        time = {d: (None if d in drop else n.time.get(d)) for d in DEVICES}
        reason = {**n.reason, **{d: f"pinned to the {want.upper()} (layer device types)" for d in drop}}
        nodes.append(replace(n, time=time, reason=reason))
    graph = CostGraph(nodes, g.tensors, g.transition, g.static_power_w, g.name, g.tensor_transition)
    return replace(model, graph=graph)

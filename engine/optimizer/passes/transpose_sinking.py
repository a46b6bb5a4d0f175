"""Shuffles that leave the last axis alone move across fully connected layers.

FullyConnected contracts the last axis alone, so for a permutation p with p[-1] = last,
``FC(transpose(x, p)) == transpose(FC(x), p)`` exactly: the same products, reordered rows. Moved
after the layer, the transpose meets the shuffles that usually follow it (an exported attention
block transposes (N, S, E) to (S, N, E) before its QKV projection, then reshapes the projection
into heads) and composes with them, and a backend that reads shuffles as strided views of the
projection copies nothing at all; before, a full copy of the activation ran ahead of every
projection.

The other direction, for the same reason: a shuffle that only rearranges the leading axes of an
FC's output (an exported attention block's output projection runs on (S·N, E) rows and is then
reshaped and transposed to (N, S, E)) moves above the FC when the FC's input is itself a
shuffle's, so that the two shuffles compose into one and the FC's output comes out in the order
its readers (a residual add) use. A shuffle is moved in one direction only: down when the FC's
input is no shuffle's output, up when it is, so the two rules never undo each other.

Each moved layer keeps its name, pins and weights; the layer that comes last writes the original
output tensor, so readers and network outputs see the same names.
"""

from __future__ import annotations

from dataclasses import replace

from engine.ir.layers import LayerKind, ShuffleParams
from engine.ir.network import Layer, Network
from engine.optimizer.graph import pure_permutation, sole_consumer
from engine.optimizer.rewrite import Rewrite

NAME = "TransposeFcSinking"


def _last_axis_perm(layer: Layer, net: Network) -> tuple[int, ...] | None:
    """The permutation of a shuffle that only transposes and keeps the last axis last, else None."""
    perm = pure_permutation(layer)
    if perm is None:
        return None
    rank = len(net.tensors[layer.inputs[0]].shape)
    return perm if rank >= 2 and perm[-1] == rank - 1 and perm != tuple(range(rank)) else None


def _keeps_last_axis(layer: Layer, net: Network) -> bool:
    """A shuffle whose every element keeps its last-axis index: transposes that leave the last axis
    last and a reshape that keeps the last dim (row-major, so the index within it is unchanged)."""
    if layer.kind is not LayerKind.SHUFFLE:
        return False
    p = layer.params
    x = net.tensors[layer.inputs[0]].shape
    if not x:
        return False
    last = len(x) - 1
    if p.first_perm is not None and p.first_perm[-1] != last:
        return False
    if p.reshape is not None and (not p.reshape or p.reshape[-1] != x[-1]):
        return False
    rank = len(p.reshape) if p.reshape is not None else len(x)
    return p.second_perm is None or p.second_perm[-1] == rank - 1


def _produced_by_shuffle(producers: dict[str, Layer], tensor: str) -> bool:
    la = producers.get(tensor)
    return la is not None and la.kind is LayerKind.SHUFFLE


def _hoist_once(net: Network) -> Rewrite | None:
    uses, producers = net.consumers(), net.producers()
    for fc in net.layers:
        if fc.kind is not LayerKind.FULLY_CONNECTED or not _produced_by_shuffle(producers, fc.inputs[0]):
            continue
        sh = sole_consumer(net, fc.outputs[0], uses)
        if sh is None or not _keeps_last_axis(sh, net):
            continue
        x = fc.inputs[0]
        c = net.tensors[x].shape[-1]
        p = sh.params
        params = p if p.reshape is None else replace(p, reshape=(*p.reshape[:-1], c))
        moved = net.unique_name(f"{sh.name}/before_fc")
        new_sh = Layer(sh.name, params, [x], [moved], {}, sh.precision, sh.device, list(sh.origin))
        new_fc = Layer(fc.name, fc.params, [moved, *fc.inputs[1:]], [sh.outputs[0]], dict(fc.weights), fc.precision,
                       fc.device, list(fc.origin))
        net.replace_layer(fc, new_sh)
        net.replace_layer(sh, new_fc)
        net.sort()
        return Rewrite(NAME, "reorder", (fc.name, sh.name), fc.name,
                       detail="the shuffle of the leading axes now precedes the fully connected layer")
    return None


def _sink_once(net: Network) -> Rewrite | None:
    uses, producers = net.consumers(), net.producers()
    for tr in net.layers:
        perm = _last_axis_perm(tr, net)
        if perm is None or _produced_by_shuffle(producers, tr.inputs[0]):
            continue
        fc = sole_consumer(net, tr.outputs[0], uses)
        if fc is None or fc.kind is not LayerKind.FULLY_CONNECTED or fc.inputs[0] != tr.outputs[0]:
            continue
        y = fc.outputs[0]
        inner = net.unique_name(f"{fc.name}/untransposed")
        new_fc = Layer(fc.name, fc.params, [tr.inputs[0], *fc.inputs[1:]], [inner], dict(fc.weights), fc.precision,
                       fc.device, list(fc.origin))
        new_tr = Layer(tr.name, ShuffleParams(first_perm=perm), [inner], [y], {}, tr.precision, tr.device,
                       list(tr.origin))
        net.replace_layer(tr, new_fc)
        net.replace_layer(fc, new_tr)
        net.sort()
        return Rewrite(NAME, "reorder", (tr.name, fc.name), fc.name,
                       detail=f"the transpose {list(perm)} now follows the fully connected layer")
    return None


def run(net: Network) -> list[Rewrite]:
    """Sink each last-axis-keeping transpose below the FC that alone reads it; hoist each
    leading-axes shuffle of an FC's output above the FC when a shuffle feeds that FC."""
    done = []
    while (rw := _sink_once(net) or _hoist_once(net)) is not None:
        done.append(rw)
    return done

"""INT8 or FP16 for each GPU convolution of an INT8 build, by timing both (TensorRT's builder with
``--int8 --fp16`` picks the faster precision per layer the same way).

The builder hands over the network twice, assigned INT8 (``net8``) and as a plain FP16 build of the
same graph (``net16``). Each INT8 convolution the GPU runs on its integer kernels (tensor-core or
depthwise) is timed in both forms on this GPU, through the same tactic timing and timing cache the
build uses anyway (``tactics.time_tactics``; the depthwise kernels here). A layer that changes
precision costs its neighbours a conversion pass over the tensor between them (int8 <-> fp16), so
the choice is made for the whole graph at once, at the least total time of kernels and
conversions (``precision_cut``): a SiLU expansion and its depthwise layer pay only together. The
conversion cost is a line (launch + bytes) fitted to two casts timed here.

Kept INT8: layers pinned by the user, layers whose FP16 form has no timed kernel, and ties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from backends.gpu.precision_cut import LabelProblem, solve
from backends.gpu.tactics import (
    TimingCache,
    _time_launches,
    _timed_or_cached,
    segment_ops,
    signature,
    time_tactics,
)
from engine.ir.dtypes import Precision
from engine.ir.layers import ElementWiseOp, LayerKind
from engine.ir.logger import Logger
from engine.ir.network import Layer, Network

_BRIDGE_OPS = (ElementWiseOp.PROD, ElementWiseOp.SUM, ElementWiseOp.SUB, ElementWiseOp.DIV)


class _Single(NamedTuple):
    """One kernel to time (``tactics._time_launches`` times named tactics)."""

    name: str


def time_depthwise16(g: Any, act: tuple[int, float, float], res: bool) -> dict[str, float]:
    """ms per launch of the FP16 depthwise kernel (``direct.depthwise_conv``) on random data."""
    import cupy as cp

    from backends.gpu.kernels.direct import depthwise_conv
    from backends.gpu.layout import round_up

    rng = np.random.default_rng(0)
    cp8 = round_up(g.c, 8)
    x = cp.asarray(rng.standard_normal((g.n, g.h, g.w, cp8)).astype(np.float16))
    w = cp.asarray((rng.standard_normal((g.r, g.s, cp8)) / (g.r * g.s)).astype(np.float16))
    b = cp.zeros(cp8, cp.float32)
    y = cp.empty((g.n, g.p, g.q, cp8), cp.float16)
    r = cp.asarray(rng.standard_normal((g.n, g.p, g.q, cp8)).astype(np.float16)) if res else None
    depthwise_conv(x, w, b, y, g, act, r)  # loads the module outside the graph capture
    return _time_launches([_Single("depthwise")], lambda t: depthwise_conv(x, w, b, y, g, act, r), 10)


def time_depthwise8(g: Any, epi: Any, res: bool, ldy: int) -> dict[str, float]:
    """ms per launch of the INT8 depthwise kernel (``int8_dw.dwconv2d_s8``) with the layer's epilogue."""
    import cupy as cp

    from backends.gpu.kernels import int8 as int8k
    from backends.gpu.kernels.int8_dw import dwconv2d_s8, pack_dw_weights8

    rng = np.random.default_rng(0)
    c16 = int8k.cp16(g.c)
    x = cp.asarray(rng.integers(-128, 128, (g.n, g.h, g.w, c16), dtype=np.int8))
    w = cp.asarray(pack_dw_weights8(rng.integers(-128, 128, (g.c, 1, g.r, g.s), dtype=np.int8)))
    dev = int8k.DeviceEpilogue.upload(epi)
    y = cp.empty((g.n * g.p * g.q, ldy), cp.int8 if epi.quantized else cp.float32)
    r = cp.asarray(rng.integers(-128, 128, (g.n, g.p, g.q, c16), dtype=np.int8)) if res else None
    dwconv2d_s8(x, w, y, g, dev, r, ldy)
    return _time_launches([_Single("dwconv8")], lambda t: dwconv2d_s8(x, w, y, g, dev, r, ldy), 10)


def time_conversion(elements: int) -> float:
    """ms of one int8 -> fp16 and one fp16 -> int8 cast of ``elements`` values (their mean), CuPy's
    element-wise kernels in a CUDA graph: the passes a precision change adds."""
    import cupy as cp

    a8 = cp.zeros(elements, cp.int8)
    a16 = cp.zeros(elements, cp.float16)
    cp.copyto(a16, a8, casting="unsafe")  # compiles and loads both kernels outside the graph capture
    cp.copyto(a8, a16, casting="unsafe")
    to16 = _time_launches([_Single("to16")], lambda t: cp.copyto(a16, a8, casting="unsafe"), 10)
    to8 = _time_launches([_Single("to8")], lambda t: cp.copyto(a8, a16, casting="unsafe"), 10)
    return (to16["to16"] + to8["to8"]) / 2


class ConversionCost:
    """ms of a conversion pass over a tensor of E elements: a + b E, fitted to two sizes timed here
    (kept in the timing cache, whose keys name the GPU)."""

    SIZES = (1 << 16, 1 << 26)

    def __init__(self, cache: TimingCache, timer: Callable[[int], float] | None = None) -> None:
        key = cache.key(f"conversion int8<->fp16 {self.SIZES}")
        hit = cache.entries.get(key)
        if isinstance(hit, dict) and all(isinstance(hit.get(k), float) and hit[k] >= 0 for k in ("a", "b")):
            self.a, self.b = hit["a"], hit["b"]
            return
        small, large = ((timer or time_conversion)(n) for n in self.SIZES)
        self.b = max(large - small, 0.0) / (self.SIZES[1] - self.SIZES[0])
        self.a = max(small - self.b * self.SIZES[0], 0.0)
        cache.entries[key] = {"a": float(self.a), "b": float(self.b)}

    def __call__(self, elements: int) -> float:
        return self.a + self.b * elements


def _depthwise_times(ops8: list[Any], ops16: list[Any], cache: TimingCache,
                     log: Logger) -> tuple[dict[str, float], dict[str, float]]:
    """(INT8 ms, FP16 ms) of the depthwise launches among both lowerings' ``ops``, through the timing
    cache (one kernel each: its entry names it)."""
    ms8: dict[str, float] = {}
    ms16: dict[str, float] = {}
    counts = {"timed": 0, "hits": 0}
    for op in ops8:
        if op.kind == "dwconv8":
            i = op.info
            key = cache.key(f"dw8 {signature(i['geom'], (0, 0.0, 0.0), i['res'] is not None)} "
                            f"q{int(i['epi'].quantized)} ldy{i['ldy']} {i['epi'].nonlinear or ''}")
            _timed_or_cached(log, cache, key, op.label,
                             lambda i=i: time_depthwise8(i["geom"], i["epi"], i["res"] is not None, i["ldy"]),
                             {}, ms8, counts, known=lambda name: name == "dwconv8")
    for op in ops16:
        if op.kind == "depthwise":
            i = op.info
            key = cache.key(f"dw16 {signature(i['geom'], i['act'], i['res'] is not None)}")
            _timed_or_cached(log, cache, key, op.label,
                             lambda i=i: time_depthwise16(i["geom"], i["act"], i["res"] is not None),
                             {}, ms16, counts, known=lambda name: name == "depthwise")
    return ms8, ms16


def choose_fp16_layers(net8: Network, net16: Network, layer_names: list[str], cache: TimingCache, level: int,
                       log: Logger, sources: tuple[str, ...] | None = None,
                       keep: frozenset[str] = frozenset()) -> dict[str, tuple[float, float]]:
    """The INT8 convolutions of ``net8`` to build FP16 instead: name -> (INT8 ms, FP16 ms) of its
    kernel. ``keep``: layers that stay as they are (pinned by the user)."""
    log.info("Precision by timing: timing each INT8 convolution's FP16 form")
    ops8, ops16 = segment_ops(net8, layer_names), segment_ops(net16, layer_names)  # each lowered once
    _, t8 = time_tactics(net8, layer_names, cache, level, log, sources, ops8)
    _, t16 = time_tactics(net16, layer_names, cache, level, log, sources, ops16)
    d8, d16 = _depthwise_times(ops8, ops16, cache, log)
    t8.update(d8)
    t16.update(d16)
    int8 = {la.name for la in net8 if la.precision is Precision.INT8}  # t8 also times net8's FP16 layers
    candidates = {n for n in t8 if n in t16 and n in int8 and n not in keep}
    if not candidates:
        return {}
    problem = precision_problem(net8, set(layer_names), candidates, t8, t16, ConversionCost(cache))
    fp16 = solve(problem)
    kernel8 = sum(t8[n] for n in candidates)
    chosen_ms = sum(t16[n] if n in fp16 else t8[n] for n in candidates)
    log.info(f"Precision by timing: {len(fp16)} of {len(candidates)} INT8 convolutions built FP16 "
             f"(their kernels {kernel8:.3f} -> {chosen_ms:.3f} ms; conversions counted: "
             f"{problem.energy(set()):.3f} -> {problem.energy(fp16):.3f} ms)")
    for n in sorted(candidates):
        log.verbose(f"  {n}: INT8 {t8[n]:.4f} ms, FP16 {t16[n]:.4f} ms -> {'FP16' if n in fp16 else 'INT8'}")
    return {n: (t8[n], t16[n]) for n in sorted(fp16)}


def precision_problem(net: Network, segment: set[str], candidates: set[str], t8: dict[str, float],
                      t16: dict[str, float], conversion: Callable[[int], float]) -> LabelProblem:
    """The energy ``precision_cut.solve`` minimises: each candidate's kernel time in each precision,
    and a conversion over each tensor between layers of different precisions (candidates among
    themselves; a fixed neighbour counts towards the candidate's own cost: an INT8 layer that is no
    candidate reads and writes int8, any other layer float). Network inputs and outputs (float32,
    NCHW) convert in either precision, so they count for neither."""
    from backends.gpu.lower_int8 import is_int8

    producers, consumers = net.producers(), net.consumers()
    problem = LabelProblem()
    for name in sorted(candidates):
        problem.add_unary(name, t8[name], t16[name])

    def elements(t: str) -> int:
        return int(np.prod(net.tensors[t].shape))

    def int8_fixed(layer: Layer | None) -> bool:
        return layer is not None and layer.name in segment and layer.name not in candidates and is_int8(layer)

    for name in sorted(candidates):
        layer = net.layer(name)
        data = [layer.inputs[0]] + ([layer.inputs[1]] if getattr(layer.params, "residual", False) else [])
        for x in data:
            src = producers.get(x)
            if src is None:  # a network input (float32 NCHW): either form converts it
                continue
            through = _bridge_source(net, src, producers, consumers,
                                     lambda p: p is not None and (p.name in candidates or int8_fixed(p)))
            if through is not None:  # an element-wise layer the INT8 lowering fuses between int8 tensors
                src = through
            if src is not None and src.name in candidates:
                problem.add_pair(src.name, name, conversion(elements(x)))
            elif int8_fixed(src):
                problem.add_unary(name, fp16=conversion(elements(x)))
            else:
                problem.add_unary(name, int8=conversion(elements(x)))
        t = layer.outputs[0]
        readers = [u for u in consumers.get(t, []) if u.name not in candidates
                   and _bridge_reader(net, u, candidates, consumers) is None]
        if any(int8_fixed(u) for u in readers):
            problem.add_unary(name, fp16=conversion(elements(t)))
        float_readers = [u for u in readers if not int8_fixed(u)]  # a network output converts either way
        if float_readers and _has_output_scale(layer):
            problem.add_unary(name, int8=conversion(elements(t)))
    return problem


def _has_output_scale(layer: Layer) -> bool:
    from engine.ir import int8_annotation

    return int8_annotation.OUTPUT_SCALE in layer.weights


def _is_bridge(net: Network, layer: Layer | None, consumers: dict) -> bool:
    """An element-wise product, sum, difference or quotient of two tensors (a squeeze-excitation's
    ``x * gate``) whose output one layer reads: where its neighbours are INT8 the lowering runs it
    int8 -> int8 (``Int8Lowering.lower_int8_bridge``), so it converts nothing."""
    return (layer is not None and layer.kind is LayerKind.ELEMENTWISE and layer.params.op in _BRIDGE_OPS
            and len(layer.inputs) == 2 and len(consumers.get(layer.outputs[0], [])) == 1
            and layer.outputs[0] not in net.outputs)


def _bridge_source(net: Network, src: Layer | None, producers: dict, consumers: dict,
                   int8_side: Callable[[Layer | None], bool]) -> Layer | None:
    """The layer a bridge ``src`` passes on: the producer of its one input that is (or may be) INT8."""
    if not _is_bridge(net, src, consumers):
        return None
    sides = [producers.get(x) for x in src.inputs if int8_side(producers.get(x))]
    return sides[0] if len(sides) == 1 else None


def _bridge_reader(net: Network, u: Layer, candidates: set[str], consumers: dict) -> Layer | None:
    """The candidate that reads through bridge ``u`` (None where ``u`` is no bridge into one)."""
    if not _is_bridge(net, u, consumers):
        return None
    reader = consumers[u.outputs[0]][0]
    return reader if reader.name in candidates and reader.inputs[0] == u.outputs[0] else None

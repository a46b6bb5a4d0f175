"""Seeded structure-aware fuzzers for plans and ONNX models, one mutant at a time.

Plans: one field of the JSON manifest (or of a DLA loadable's manifest) is replaced, removed or
rewired, checksums recomputed; the mutant is loaded and, if it loads, executed. ONNX models: one
attribute, dimension, element type, wire or node is changed; the mutant is built and, if it builds,
run against ONNX Runtime. Each case runs under a time cap (SIGALRM). Outcomes:

* ``refused``: a hetrt error (PlanError, ParserError, UnsupportedError, ...) naming what is wrong;
* ``ran``: loaded/built and executed (models: and matched ONNX Runtime);
* the largest allocation peak of any case is recorded (tracemalloc, numpy included);
* violations: ``raw`` (any other exception), ``hang`` (over the time cap), ``lenient`` (a model
  ONNX Runtime refuses but hetrt builds), ``mismatch`` (a run that differs from ONNX Runtime),
  ``unnamed`` (a hetrt error that does not say where).
"""

from __future__ import annotations

import contextlib
import copy
import random
import signal
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.ir.errors import ExecutionError, HetrtError
from engine.ir.logger import Logger, Severity

from .forge import join_loadable, join_plan, split_loadable, split_plan

QUIET = Logger(Severity.ERROR)
VIOLATIONS = ("raw", "hang", "lenient", "mismatch", "unnamed")
WHERE_WORDS = ("layer", "node", "tensor", "blob", "plan", "partition", "loadable", "input", "output", "graph",
               "initializer", "model", "field", "attribute", "opset", "tactic", "network", "op ")


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_cap(seconds: float) -> Iterator[None]:
    def fire(signum, frame):
        raise CaseTimeout(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class FuzzReport:
    outcomes: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    peak_bytes: int = 0  # the largest Python/numpy allocation peak of one case (tracemalloc)

    def add(self, outcome: str, detail: str = "") -> None:
        self.outcomes[outcome] += 1
        if outcome in VIOLATIONS:
            self.examples.setdefault(outcome, [])
            if len(self.examples[outcome]) < 5:
                self.examples[outcome].append(detail)

    @property
    def violations(self) -> int:
        return sum(self.outcomes[v] for v in VIOLATIONS)

    def summary(self) -> str:
        lines = [", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
                 + f"; largest case peak {self.peak_bytes / 2**20:.1f} MiB"]
        for k, ex in self.examples.items():
            lines += [f"{k}: {e}" for e in ex]
        return "\n".join(lines)


def _classify_error(e: BaseException) -> tuple[str, str]:
    if isinstance(e, CaseTimeout):
        return "hang", str(e)
    if isinstance(e, HetrtError):
        msg = str(e)
        if "internal error" in msg:  # a converter bug wrapped by the parser's safety net
            return "raw", msg[:300]
        return ("refused" if any(w in msg for w in WHERE_WORDS) else "unnamed"), msg[:200]
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return "raw", f"{type(e).__name__}: {e} | {''.join(tb[-3:])[-600:]}"


# ----------------------------------------------------------------------------------- values

def odd_values(rng: random.Random, current: Any, names: list[str]) -> list[Any]:
    """Replacement candidates for one JSON value: type confusion, extremes, rewiring."""
    cands: list[Any] = [None, True, "", "x" * 3, -1, 0, 1, 2**31, 2**40, -(2**40), 1.5, float("nan"),
                        float("inf"), [], {}, [[[[[]]]]], {"$enum": "Bogus", "v": 1}, {"$type": "Nope"}]
    if isinstance(current, bool):
        cands += [not current, 1, "true"]
    elif isinstance(current, int):
        cands += [current + 1, current - 1, -current, current * 1000, str(current), float(current)]
    elif isinstance(current, float):
        cands += [current * 1e6, -current, 0.0, 1e-300, str(current)]
    elif isinstance(current, str):
        cands += [current + "_", current.upper(), *rng.sample(names, min(3, len(names)))]
    elif isinstance(current, list):
        cands += [current * 2, current[:-1], list(reversed(current)), current + [current[0]] if current else [1]]
    elif isinstance(current, dict):
        cands += [{k: v for k, v in list(current.items())[:-1]}, {**current, "extra": 1}]
    return cands


def _containers(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (path, container) of a JSON tree, iteratively."""
    stack = [(path, obj)]
    while stack:
        p, node = stack.pop()
        if isinstance(node, (dict, list)):
            yield p, node
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((p + (k,), v) for k, v in items)


def mutate_json(rng: random.Random, root: Any, names: list[str]) -> str:
    """Change one value of ``root`` in place; returns a description."""
    spots = [(p, c) for p, c in _containers(root) if c]
    path, container = rng.choice(spots)
    key = rng.choice(list(container.keys()) if isinstance(container, dict) else range(len(container)))
    action = rng.random()
    if action < 0.08 and isinstance(container, dict):
        del container[key]
        return f"del {path + (key,)}"
    if action < 0.12 and isinstance(container, list):
        container.insert(key, copy.deepcopy(container[key]))
        return f"dup {path + (key,)}"
    value = rng.choice(odd_values(rng, container[key], names))
    container[key] = value
    return f"set {path + (key,)} = {str(value)[:40]}"


# ------------------------------------------------------------------------------------ plans

def _tensor_names(manifest: dict) -> list[str]:
    return [t["name"] for t in manifest["network"]["tensors"]] + [la["name"] for la in manifest["network"]["layers"]]


def plan_mutant(rng: random.Random, base: bytes) -> tuple[bytes, str]:
    manifest, blobs, platform = split_plan(base)
    names = _tensor_names(manifest)
    if manifest["loadables"] and rng.random() < 0.3:
        idx = manifest["loadables"][rng.randrange(len(manifest["loadables"]))]
        lm, region = split_loadable(blobs[idx])
        what = "loadable: " + mutate_json(rng, lm, [t["name"] for t in lm["tensors"]])
        try:
            blobs[idx] = join_loadable(lm, region)
        except ValueError:  # NaN in JSON the forger cannot write: write the value as a string
            return plan_mutant(rng, base)
        manifest["blobs"][idx]["shape"] = [len(blobs[idx])]
    else:
        section = rng.choice(["network", "network", "network", "placement", "tactics", "blobs", "memory_plan"])
        target = manifest[section]
        if not target:
            target = manifest["network"]
        what = mutate_json(rng, target if isinstance(target, (dict, list)) else manifest, names)
    try:
        return join_plan(manifest, blobs, platform), what
    except (TypeError, KeyError, IndexError, ValueError):  # a blob table the forger cannot lay out
        return plan_mutant(rng, base)


def run_plan_case(data: bytes, feeds_for: Callable[[Any], dict]) -> tuple[str, str]:
    from engine.runtime import Runtime

    try:
        engine = Runtime(QUIET).deserialize(data)
        engine.create_execution_context().execute(feeds_for(engine))
        return "ran", ""
    except ExecutionError as e:
        return "late", str(e)[:200]  # loaded, then failed cleanly at execute (counted, not a violation)
    except BaseException as e:  # noqa: BLE001 - classification of every outcome is the point
        if isinstance(e, KeyboardInterrupt):
            raise
        return _classify_error(e)


def random_feeds(engine, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for t in engine.io_tensors:
        if t.mode == "input":
            dtype = np.dtype(t.dtype.numpy if hasattr(t.dtype, "numpy") else t.dtype)
            values = rng.normal(size=t.shape) if dtype.kind == "f" else rng.integers(0, 2, t.shape)
            out[t.name] = values.astype(dtype)
    return out


def fuzz_plans(bases: list[bytes], cases: int, seed: int, cap_s: float = 10.0) -> FuzzReport:
    rng = random.Random(seed)
    report = FuzzReport()
    with _traced():
        for _ in range(cases):
            data, what = plan_mutant(rng, rng.choice(bases))
            tracemalloc.reset_peak()
            try:
                with time_cap(cap_s):
                    outcome, detail = run_plan_case(data, random_feeds)
            except CaseTimeout as e:
                outcome, detail = "hang", str(e)
            report.peak_bytes = max(report.peak_bytes, tracemalloc.get_traced_memory()[1])
            report.add(outcome, f"{what}: {detail}")
    return report


@contextlib.contextmanager
def _traced() -> Iterator[None]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


# ------------------------------------------------------------------------------------ models

INT_VALUES = (-(2**40), -2, -1, 0, 1, 2, 3, 5, 2**40)


def _mutate_attribute(rng: random.Random, model: onnx.ModelProto) -> str:
    nodes = [n for n in model.graph.node if n.attribute] or list(model.graph.node)
    node = rng.choice(nodes)
    if not node.attribute or rng.random() < 0.15:
        name = rng.choice(["transB", "axis", "keepdims", "group", "alpha", "mode", "bogus"])
        node.attribute.append(helper.make_attribute(name, rng.choice([1, 0.5, "nearest", [1, 2]])))
        return f"add attribute {name} to {node.name}"
    a = rng.choice(list(node.attribute))
    if rng.random() < 0.1:
        node.attribute.remove(a)
        return f"remove {node.name}.{a.name}"
    if a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(INT_VALUES)
    elif a.type == onnx.AttributeProto.INTS and a.ints:
        a.ints[rng.randrange(len(a.ints))] = rng.choice(INT_VALUES)
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    elif a.type == onnx.AttributeProto.STRING:
        a.s = rng.choice([b"", b"cubic", b"linear", b"nearest", b"\xff"])
    else:
        node.attribute.remove(a)
    return f"attribute {node.name}.{a.name}"


def _mutate_dims(rng: random.Random, model: onnx.ModelProto) -> str:
    vis = list(model.graph.input) + list(model.graph.output)
    vi = rng.choice(vis)
    dims = vi.type.tensor_type.shape.dim
    if not dims:
        return "no dims"
    d = dims[rng.randrange(len(dims))]
    d.dim_value = rng.choice([0, 1, 2, 3, 7, 2**31, 2**40])
    return f"dim of {vi.name} = {d.dim_value}"


def _mutate_dtype(rng: random.Random, model: onnx.ModelProto) -> str:
    choice = rng.random()
    types = [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT64, TensorProto.INT8,
             TensorProto.UINT8, TensorProto.STRING]
    if choice < 0.5 and model.graph.initializer:
        init = rng.choice(list(model.graph.initializer))
        arr = numpy_helper.to_array(init)
        new = rng.choice(types[:-1])
        np_type = helper.tensor_dtype_to_np_dtype(new)
        init.CopyFrom(numpy_helper.from_array(arr.astype(np_type), init.name))
        return f"initializer {init.name} -> {np_type}"
    vi = rng.choice(list(model.graph.input) + list(model.graph.output))
    vi.type.tensor_type.elem_type = rng.choice(types)
    return f"declared type of {vi.name}"


def _mutate_graph(rng: random.Random, model: onnx.ModelProto) -> str:
    g = model.graph
    names = [i.name for i in g.input] + [i.name for i in g.initializer] + [o for n in g.node for o in n.output]
    action = rng.random()
    node = rng.choice(list(g.node))
    if action < 0.35 and node.input:
        i = rng.randrange(len(node.input))
        node.input[i] = rng.choice(names + ["ghost", ""])
        return f"rewire {node.name}.input[{i}]"
    if action < 0.5:
        g.node.remove(node)
        return f"remove {node.name}"
    if action < 0.6:
        nodes = list(g.node)
        rng.shuffle(nodes)
        del g.node[:]
        g.node.extend(nodes)
        return "shuffle nodes"
    if action < 0.8:
        node.op_type = rng.choice(["Relu", "Add", "Conv", "Gemm", "MaxPool", "Softmax", "Reshape", "Concat",
                                   "Resize", "Transpose", "Flatten", "Mul", "Sigmoid", "Identity", "NoSuchOp"])
        return f"op of {node.name} -> {node.op_type}"
    if action < 0.9:
        node.input.append(rng.choice(names))
        return f"extra input to {node.name}"
    model.opset_import[0].version = rng.choice([1, 7, 10, 13, 21, 22, 99])
    return f"opset {model.opset_import[0].version}"


MODEL_MUTATIONS = (_mutate_attribute, _mutate_attribute, _mutate_dims, _mutate_dtype, _mutate_graph)


def model_mutant(rng: random.Random, base: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """One or two mutations of a copy of ``base``."""
    m = copy.deepcopy(base)
    what = [rng.choice(MODEL_MUTATIONS)(rng, m) for _ in range(1 if rng.random() < 0.7 else 2)]
    return m, "; ".join(what)


def _ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _oracle_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model ONNX Runtime checks against: models older than hetrt's first opset are lifted with
    onnx's version converter by hetrt, and ONNX Runtime has no kernels for some ancient opsets
    (Relu-1), so the oracle runs the same lifted model."""
    from engine.onnx_parser.loader import CONVERT_TO_OPSET, MIN_OPSET, default_opset

    if default_opset(model) >= MIN_OPSET:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, CONVERT_TO_OPSET)


def run_model_case(model: onnx.ModelProto, seed: int) -> tuple[str, str]:
    from engine.builder import BuilderConfig, build_from_onnx
    from engine.compare import compare_arrays
    from engine.runtime import Runtime

    try:
        plan = build_from_onnx(model, BuilderConfig(), QUIET)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return _classify_error(e)
    try:
        session = _ort_session(_oracle_model(model))
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, CaseTimeout)):
            raise
        return "lenient", f"ONNX Runtime refuses ({str(e)[:150]}) but hetrt built it"
    try:
        engine = Runtime(QUIET).deserialize(plan)
        feeds = random_feeds(engine, seed)
        ours = engine.create_execution_context().execute(feeds)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        outcome, detail = _classify_error(e)
        return ("raw" if outcome == "refused" else outcome), f"built, then failed: {detail}"
    try:
        ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, CaseTimeout)):
            raise
        return "lenient", f"ONNX Runtime fails to run ({str(e)[:150]}) but hetrt built it"
    for name, r in ref.items():
        got = ours.get(name)
        if got is None or got.shape != r.shape or got.dtype != r.dtype:
            return "mismatch", f"output {name}: {None if got is None else (got.shape, got.dtype)} vs {r.shape, r.dtype}"
        if r.dtype.kind == "f":
            scale = 1.0 + (float(np.nanmax(np.abs(r))) if r.size and np.isfinite(r).any() else 0.0)
            if not compare_arrays(name, got, r, rtol=1e-4, atol=1e-4 * scale).passed:
                return "mismatch", f"output {name} differs"
        elif not np.array_equal(got, r):
            return "mismatch", f"output {name} differs"
    return "ran", ""


def fuzz_models(bases: list[onnx.ModelProto], cases: int, seed: int, cap_s: float = 10.0) -> FuzzReport:
    rng = random.Random(seed)
    report = FuzzReport()
    with _traced():
        for k in range(cases):
            model, what = model_mutant(rng, rng.choice(bases))
            tracemalloc.reset_peak()
            try:
                with time_cap(cap_s):
                    outcome, detail = run_model_case(model, k)
            except CaseTimeout as e:
                outcome, detail = "hang", str(e)
            report.peak_bytes = max(report.peak_bytes, tracemalloc.get_traced_memory()[1])
            report.add(outcome, f"{what}: {detail}")
    return report

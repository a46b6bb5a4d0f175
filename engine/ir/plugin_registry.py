"""The plugin registry: custom layers described by data, implemented by registered Python code.

A plugin (TensorRT's IPluginV3 / ``tensorrt.plugin`` in spirit) is identified by a namespace, a
name and a version. Its *shape function* maps input tensor descriptors and typed attributes to
output descriptors; its *implementations* compute it, one per backend ("reference": numpy arrays;
"gpu": CuPy arrays on a stream). The attribute schema is read from the shape function's signature:
every parameter after the tensor inputs is a field with a type (int, float, str, list[int],
list[float] or numpy.ndarray) and optionally a default.

This module lives in the IR because the network (shape inference), the plan reader (schema check)
and the backends (dispatch) all need it; the user-facing decorators are re-exported by
``engine.plugin``. Nothing here imports or runs code named by a plan: a plan only names a plugin,
and the registry answers whether that plugin was registered in this process.
"""

from __future__ import annotations

import inspect
import math
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.ir.dtypes import DataType

BACKENDS = ("reference", "gpu")
# Field type tags, as stored in plans.
INT, FLOAT, STR, INTS, FLOATS, ARRAY = "int", "float", "str", "ints", "floats", "array"
FIELD_TYPES = (INT, FLOAT, STR, INTS, FLOATS, ARRAY)
ARRAY_DTYPES = ("float32", "float16", "int8", "int32", "int64", "uint8", "bool")
MAX_ARRAY_ELEMENTS = 1 << 16  # array fields are attributes (anchors, ...), not weights


class PluginError(ValueError):
    """A plugin definition, a lookup or a field value is wrong (callers wrap it in their error)."""


@dataclass(frozen=True)
class TensorDesc:
    """A tensor as a shape function sees it: static shape and numpy dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def like(self, shape: Sequence[int] | None = None, dtype: Any = None) -> TensorDesc:
        """A descriptor with this one's shape/dtype unless overridden."""
        return TensorDesc(self.shape if shape is None else tuple(shape), self.dtype if dtype is None else dtype)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass
class PluginSpec:
    """One registered plugin version: its schema, shape function and implementations."""

    namespace: str
    name: str
    version: str
    shape_fn: Callable[..., Any]
    num_inputs: int | None  # None: any number (a *args parameter)
    fields: tuple[FieldSpec, ...]
    precisions: tuple[str, ...] = ("fp32", "fp16")
    impls: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return qualified(self.namespace, self.name)

    def describe(self) -> str:
        return f"plugin '{self.key}' version {self.version}"

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


_LOCK = threading.Lock()
_REGISTRY: dict[tuple[str, str, str], PluginSpec] = {}


def qualified(namespace: str, name: str) -> str:
    return f"{namespace}::{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    """'namespace::name' → (namespace, name); a bare name has the empty namespace."""
    if not isinstance(key, str) or not key:
        raise PluginError(f"plugin name must be a non-empty string, got {key!r}")
    ns, sep, name = key.rpartition("::")
    if not name or (sep and not ns):
        raise PluginError(f"plugin name {key!r} must be 'namespace::name' or 'name'")
    for part in (ns, name):
        if part and not all(c.isalnum() or c in "_.-" for c in part):
            raise PluginError(f"plugin name {key!r}: use letters, digits, '_', '.' and '-' only")
    return ns, name


# ---------------------------------------------------------------------------------------------
# schema from the shape function's signature


def _field_type(annotation: Any, where: str) -> str:
    if annotation is int:
        return INT
    if annotation is float:
        return FLOAT
    if annotation is str:
        return STR
    if annotation is np.ndarray or typing.get_origin(annotation) is np.ndarray:
        return ARRAY
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple, Sequence) and args:
        inner = [a for a in args if a is not Ellipsis]
        if inner and all(a is int for a in inner):
            return INTS
        if inner and all(a is float for a in inner):
            return FLOATS
    raise PluginError(f"{where}: type {annotation!r} is not a plugin field type "
                      f"(int, float, str, list[int], list[float], numpy.ndarray)")


def _schema(fn: Callable[..., Any], key: str) -> tuple[int | None, tuple[FieldSpec, ...]]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:  # unresolvable annotations
        raise PluginError(f"plugin '{key}': cannot read the shape function's annotations: {e}") from None
    n_inputs: int | None = 0
    fields = []
    for p in inspect.signature(fn).parameters.values():
        ann = hints.get(p.name, inspect.Parameter.empty)
        if p.kind is p.VAR_POSITIONAL:
            if fields:
                raise PluginError(f"plugin '{key}': *{p.name} (the inputs) must come before the fields")
            n_inputs = None
            continue
        if ann is TensorDesc:
            if fields or n_inputs is None:
                raise PluginError(f"plugin '{key}': input '{p.name}' must come before the fields")
            n_inputs += 1
            continue
        if p.kind in (p.VAR_KEYWORD,):
            raise PluginError(f"plugin '{key}': **{p.name} is not allowed; declare each field with its type")
        if ann is inspect.Parameter.empty:
            raise PluginError(f"plugin '{key}': parameter '{p.name}' needs a type annotation "
                              f"(TensorDesc for an input, or a field type)")
        ftype = _field_type(ann, f"plugin '{key}' field '{p.name}'")
        default = p.default
        if default is not inspect.Parameter.empty:
            default = check_value(ftype, default, f"plugin '{key}' field '{p.name}' default")
        fields.append(FieldSpec(p.name, ftype, default))
    return n_inputs, tuple(fields)


# ---------------------------------------------------------------------------------------------
# field values: canonical forms (JSON-friendly, hashable), checked against the schema


@dataclass(frozen=True)
class PluginArray:
    """A numpy-array field, held as data: dtype name, shape and the flat values."""

    dtype: str
    shape: tuple[int, ...]
    values: tuple

    def numpy(self) -> np.ndarray:
        return np.array(self.values, dtype=self.dtype).reshape(self.shape)


def check_value(ftype: str, value: Any, where: str) -> Any:
    """``value`` in its canonical form for ``ftype``, or PluginError saying why not."""
    if ftype == INT:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise PluginError(f"{where} must be an int, got {type(value).__name__} {value!r}")
        return int(value)
    if ftype == FLOAT:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise PluginError(f"{where} must be a float, got {type(value).__name__} {value!r}")
        return float(value)
    if ftype == STR:
        if not isinstance(value, str):
            raise PluginError(f"{where} must be a str, got {type(value).__name__}")
        return value
    if ftype in (INTS, FLOATS):
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise PluginError(f"{where} must be a list, got {type(value).__name__}")
        inner = INT if ftype == INTS else FLOAT
        return tuple(check_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if ftype == ARRAY:
        return _check_array(value, where)
    raise PluginError(f"{where}: unknown field type {ftype!r} (known: {', '.join(FIELD_TYPES)})")


def _check_array(value: Any, where: str) -> PluginArray:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in ARRAY_DTYPES:
            raise PluginError(f"{where}: array dtype {value.dtype} is not one of {', '.join(ARRAY_DTYPES)}")
        value = PluginArray(value.dtype.name, tuple(int(d) for d in value.shape), tuple(value.ravel().tolist()))
    if not isinstance(value, PluginArray):
        raise PluginError(f"{where} must be a numpy array, got {type(value).__name__}")
    if value.dtype not in ARRAY_DTYPES:
        raise PluginError(f"{where}: array dtype {value.dtype!r} is not one of {', '.join(ARRAY_DTYPES)}")
    if not isinstance(value.shape, tuple) or not all(type(d) is int and d >= 0 for d in value.shape):
        raise PluginError(f"{where}: array shape {value.shape!r} must be non-negative integers")
    if not isinstance(value.values, tuple) or math.prod(value.shape) != len(value.values):
        raise PluginError(f"{where}: array shape {list(value.shape)} does not match its value count")
    if len(value.values) > MAX_ARRAY_ELEMENTS:
        raise PluginError(f"{where}: array fields hold at most {MAX_ARRAY_ELEMENTS} elements")
    kind = np.dtype(value.dtype).kind
    for v in value.values:
        ok = (isinstance(v, bool) if kind == "b" else isinstance(v, int) and not isinstance(v, bool)
              if kind in "iu" else isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok:
            raise PluginError(f"{where}: array value {v!r} is not a {value.dtype}")
    try:
        arr = np.array(value.values, dtype=value.dtype)
    except (OverflowError, ValueError) as e:
        raise PluginError(f"{where}: array values do not fit {value.dtype}: {e}") from None
    if kind in "iu" and arr.tolist() != list(value.values):
        raise PluginError(f"{where}: array values do not fit {value.dtype}")
    return value


def canonical_fields(spec: PluginSpec, given: dict[str, Any], where: str) -> tuple[tuple[str, str, Any], ...]:
    """Schema-checked (name, type, value) triples in schema order, defaults filled in."""
    unknown = sorted(set(given) - {f.name for f in spec.fields})
    if unknown:
        raise PluginError(f"{where}: {spec.describe()} has no field(s) {', '.join(unknown)} "
                          f"(fields: {', '.join(f.name for f in spec.fields) or 'none'})")
    out = []
    for f in spec.fields:
        if f.name in given:
            out.append((f.name, f.type, check_value(f.type, given[f.name], f"{where}: field '{f.name}'")))
        elif f.required:
            raise PluginError(f"{where}: {spec.describe()} needs field '{f.name}' ({f.type})")
        else:
            out.append((f.name, f.type, f.default))
    return tuple(out)


def check_stored_fields(spec: PluginSpec, stored: Sequence[Any], where: str) -> None:
    """Fields read back from a plan: exactly the schema's names and types, each value valid."""
    if not isinstance(stored, (tuple, list)):
        raise PluginError(f"{where}: plugin fields must be a list")
    names = []
    for i, entry in enumerate(stored):
        if not isinstance(entry, (tuple, list)) or len(entry) != 3 or not isinstance(entry[0], str):
            raise PluginError(f"{where}: plugin field {i} must be a [name, type, value] triple")
        name, ftype, value = entry
        f = spec.field(name)
        if f is None:
            raise PluginError(f"{where}: {spec.describe()} has no field '{name}'")
        if ftype != f.type:
            raise PluginError(f"{where}: field '{name}' is stored as {ftype!r}, {spec.describe()} declares {f.type}")
        if repr(check_value(f.type, value, f"{where}: field '{name}'")) != repr(value):
            raise PluginError(f"{where}: field '{name}' value {value!r} is not in canonical {f.type} form")
        names.append(name)
    if names != [f.name for f in spec.fields]:
        raise PluginError(f"{where}: fields {names} do not match {spec.describe()}'s schema "
                          f"{[f.name for f in spec.fields]}")


def field_values(fields: Sequence[tuple[str, str, Any]]) -> dict[str, Any]:
    """Keyword arguments for shape functions and implementations (arrays as numpy, lists as lists)."""
    out = {}
    for name, ftype, value in fields:
        if ftype == ARRAY:
            out[name] = value.numpy()
        elif ftype in (INTS, FLOATS):
            out[name] = list(value)
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# registration and lookup


def register(key: str, version: str = "1", precisions: Sequence[str] = ("fp32", "fp16")) -> Callable:
    """Decorator: register the shape function of plugin ``key`` at ``version``."""
    ns, name = split_key(key)
    if not isinstance(version, str) or not version or not version.isprintable():
        raise PluginError(f"plugin '{key}': version must be a non-empty string, got {version!r}")
    bad = [p for p in precisions if p not in ("fp32", "fp16")]
    if bad or not precisions:
        raise PluginError(f"plugin '{key}': precisions must be a non-empty subset of fp32, fp16, got {precisions}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        n_inputs, fields = _schema(fn, key)
        spec = PluginSpec(ns, name, version, fn, n_inputs, fields, tuple(precisions))
        with _LOCK:
            if (ns, name, version) in _REGISTRY:
                raise PluginError(f"{spec.describe()} is already registered")
            _REGISTRY[(ns, name, version)] = spec
        return fn

    return wrap


def impl(key: str, backend: str = "reference", version: str | None = None) -> Callable:
    """Decorator: register ``backend``'s implementation of plugin ``key`` (latest version by default)."""
    if backend not in BACKENDS:
        raise PluginError(f"plugin '{key}': backend must be one of {', '.join(BACKENDS)}, got {backend!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = find(key, version)
        with _LOCK:
            if backend in spec.impls:
                raise PluginError(f"{spec.describe()} already has a {backend} implementation")
            spec.impls[backend] = fn
        return fn

    return wrap


def deregister(key: str, version: str) -> None:
    """Remove one plugin version (tests and interactive sessions)."""
    ns, name = split_key(key)
    with _LOCK:
        if _REGISTRY.pop((ns, name, version), None) is None:
            raise PluginError(f"plugin '{key}' version {version} is not registered")


def lookup(namespace: str, name: str, version: str | None = None) -> PluginSpec | None:
    """The registered spec, the highest version when ``version`` is None; None when absent."""
    with _LOCK:
        if version is not None:
            return _REGISTRY.get((namespace, name, version))
        found = [s for (ns, n, _), s in _REGISTRY.items() if ns == namespace and n == name]
    return max(found, key=lambda s: _version_key(s.version)) if found else None


def find(key: str, version: str | None = None) -> PluginSpec:
    ns, name = split_key(key)
    spec = lookup(ns, name, version)
    if spec is None:
        have = [v for (n2, m, v) in list(_REGISTRY) if n2 == ns and m == name]
        extra = f" (registered versions: {', '.join(have)})" if have else ""
        raise PluginError(f"plugin '{key}'{'' if version is None else f' version {version}'} is not registered"
                          f"{extra}")
    return spec


def registered() -> list[PluginSpec]:
    with _LOCK:
        return sorted(_REGISTRY.values(), key=lambda s: (s.namespace, s.name, _version_key(s.version)))


def _version_key(v: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in v.split("."))


def infer_outputs(spec: PluginSpec, inputs: Sequence[TensorDesc], fields: Sequence[tuple[str, str, Any]],
                  ) -> list[TensorDesc]:
    """Run the shape function; its result must be one TensorDesc or a sequence of them."""
    if spec.num_inputs is not None and len(inputs) != spec.num_inputs:
        raise PluginError(f"{spec.describe()} takes {spec.num_inputs} inputs, got {len(inputs)}")
    try:
        result = spec.shape_fn(*inputs, **field_values(fields))
    except PluginError:
        raise
    except Exception as e:  # user code: its failure is a bad layer, named by the caller
        raise PluginError(f"{spec.describe()}: shape function failed: {type(e).__name__}: {e}") from None
    outs = [result] if isinstance(result, TensorDesc) else list(result) if isinstance(result, (list, tuple)) else None
    if not outs or not all(isinstance(o, TensorDesc) for o in outs):
        raise PluginError(f"{spec.describe()}: shape function must return TensorDesc(s), got {result!r}")
    for o in outs:
        if any(d < 0 for d in o.shape):
            raise PluginError(f"{spec.describe()}: output shape {o.shape} has a negative dimension")
        try:
            DataType.from_numpy(o.dtype)
        except ValueError:
            raise PluginError(f"{spec.describe()}: output dtype {o.dtype} has no hetrt DataType") from None
    return outs

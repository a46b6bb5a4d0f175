"""Typed checks of decoded records against their dataclass annotations.

Layer parameters (``engine.ir.layers``) and DLA descriptors (``dla_sim.ops``) are frozen
dataclasses whose constructors do not check types: a plan could hand a string where an
``ActivationSpec`` belongs, a NaN where a scale belongs, or a bool where a count belongs, and the
error would surface at the first execute, far from the field. ``check_record`` walks every field
against its annotation (ints, finite floats, bools, strings, enums, literals, tuples, optionals,
nested records) and names the field that is wrong.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from enum import Enum
from typing import Any

INT_BOUND = 2**31  # |int| of any record field


class SchemaError(ValueError):
    """A field that does not match its annotation; the message names the field path."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_record(value: Any, cls: type, where: str) -> None:
    """``value`` is a ``cls`` whose every init field matches its annotation."""
    if type(value) is not cls:
        raise SchemaError(f"{where}: expected {cls.__name__}, got {type(value).__name__}")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in hints:
            check_value(getattr(value, f.name), hints[f.name], f"{where}.{f.name}")


def check_value(value: Any, hint: Any, where: str) -> None:
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return
        if len(args) == 1:  # an optional field: the precise error of its one type
            check_value(value, args[0], where)
            return
        errors = []
        for arg in typing.get_args(hint):
            try:
                check_value(value, arg, where)
                return
            except SchemaError as e:
                errors.append(str(e))
        raise SchemaError(f"{where}: {_short(value)} matches none of {_name(hint)}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint) or type(value) is bool:
            raise SchemaError(f"{where}: {_short(value)} is not one of {list(typing.get_args(hint))}")
        return
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            raise SchemaError(f"{where}: expected a list, got {_short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            for i, v in enumerate(value):
                check_value(v, args[0], f"{where}[{i}]")
        elif args:
            if len(value) != len(args):
                raise SchemaError(f"{where}: expected {len(args)} values, got {len(value)}")
            for i, (v, a) in enumerate(zip(value, args)):
                check_value(v, a, f"{where}[{i}]")
        return
    if origin is not None:  # dict[...], list[...] and the like: the container type only
        if not isinstance(value, origin):
            raise SchemaError(f"{where}: expected {origin.__name__}, got {_short(value)}")
        return
    _check_plain(value, hint, where)


def _check_plain(value: Any, hint: Any, where: str) -> None:
    if hint is type(None):
        if value is not None:
            raise SchemaError(f"{where}: expected null, got {_short(value)}")
    elif hint is bool:
        if type(value) is not bool:
            raise SchemaError(f"{where}: expected true/false, got {_short(value)}")
    elif hint is int:
        if type(value) is not int or not -INT_BOUND < value < INT_BOUND:
            raise SchemaError(f"{where}: expected an integer of magnitude < 2^31, got {_short(value)}")
    elif hint is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise SchemaError(f"{where}: expected a finite number, got {_short(value)}")
    elif hint is str:
        if type(value) is not str:
            raise SchemaError(f"{where}: expected a string, got {_short(value)}")
    elif isinstance(hint, type) and issubclass(hint, Enum):
        if not isinstance(value, hint):
            raise SchemaError(f"{where}: expected one of {[m.value for m in hint]}, got {_short(value)}")
    elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
        check_record(value, hint, where)
    elif isinstance(hint, type) and not isinstance(value, hint):
        raise SchemaError(f"{where}: expected {hint.__name__}, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def json_depth_exceeds(obj: Any, limit: int) -> bool:
    """Whether ``obj`` (decoded JSON) nests deeper than ``limit`` containers; iterative, linear."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False

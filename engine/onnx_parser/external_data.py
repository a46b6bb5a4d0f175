"""External tensor data, read under containment: a model can only name data inside its own folder.

An ONNX file names its external data by a location relative to the model's folder. A hostile model
(or a model folder holding a symlink) could name any file the user can read and have it copied
into a plan as weights. Every location is therefore checked here, independently of the installed
onnx version, before a byte is read:

* a relative path without ``..`` components, not absolute, no NUL;
* no symlink on the way (neither the file nor a folder between the model's folder and it), and the
  real path stays inside the model's real folder;
* a regular file with one link (a hard link to a file elsewhere is refused too);
* ``offset``/``length`` non-negative integers inside the file, and the bytes read are exactly the
  tensor's declared size (element count × element size).

The file is opened with ``O_NOFOLLOW`` and checked again by ``fstat`` on the open descriptor, so
swapping a file for a symlink between the check and the read does not help either.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import onnx
from onnx import TensorProto, external_data_helper, helper

from engine.ir.errors import ParserError

_SUBBYTE = {getattr(TensorProto, n): 2 for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a graph: initializers and attribute tensors, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for g in attr.graphs:
                yield from iter_tensors(g)


def declared_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes the tensor's dims and element type call for (ParserError for types that cannot be external)."""
    if any(d < 0 for d in tensor.dims):
        raise ParserError(f"tensor '{tensor.name}': negative dimension in {list(tensor.dims)}")
    count = math.prod(tensor.dims)
    if tensor.data_type in _SUBBYTE:
        return (count + 1) // 2
    if tensor.data_type == TensorProto.STRING:
        raise ParserError(f"tensor '{tensor.name}': string tensors cannot keep their data externally")
    try:
        size = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        raise ParserError(f"tensor '{tensor.name}': unknown element type {tensor.data_type}") from None
    return count * size


def _location(tensor: onnx.TensorProto, base: Path) -> Path:
    fields = {e.key: e.value for e in tensor.external_data}
    loc = fields.get("location", "")
    where = f"tensor '{tensor.name}': external data location {loc!r}"
    if not loc or "\x00" in loc or "\\" in loc:
        raise ParserError(f"{where} is empty or malformed")
    rel = PurePosixPath(loc)
    if rel.is_absolute() or os.path.isabs(loc) or any(p == ".." for p in rel.parts):
        raise ParserError(f"{where} must be a path inside the model's folder (no absolute path, no '..')")
    path = base
    for part in rel.parts:
        path = path / part
        if path.is_symlink():
            raise ParserError(f"{where}: '{path}' is a symbolic link; hetrt reads external data only from "
                              f"regular files inside the model's folder")
    real, real_base = os.path.realpath(path), os.path.realpath(base)
    if os.path.commonpath([real, real_base]) != real_base:
        raise ParserError(f"{where} resolves to '{real}', outside the model's folder '{real_base}'")
    return path


def _int_field(tensor: onnx.TensorProto, key: str) -> int | None:
    for e in tensor.external_data:
        if e.key == key:
            try:
                v = int(e.value)
            except ValueError:
                msg = f"tensor '{tensor.name}': external data {key} {e.value!r} is not an integer"
                raise ParserError(msg) from None
            if v < 0:
                raise ParserError(f"tensor '{tensor.name}': external data {key} {v} is negative")
            return v
    return None


def read_contained(tensor: onnx.TensorProto, base: Path) -> bytes:
    """The tensor's external bytes, after every containment and size check."""
    path = _location(tensor, base)
    offset = _int_field(tensor, "offset") or 0
    length = _int_field(tensor, "length")
    want = declared_nbytes(tensor)
    if length is not None and length != want:
        raise ParserError(f"tensor '{tensor.name}': external data length {length} does not match its declared "
                          f"size {want} bytes (dims {list(tensor.dims)})")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as e:
        raise ParserError(f"tensor '{tensor.name}': cannot open external data '{path}': {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ParserError(f"tensor '{tensor.name}': external data '{path}' is not a regular file")
        if st.st_nlink > 1:
            raise ParserError(f"tensor '{tensor.name}': external data '{path}' has {st.st_nlink} hard links; "
                              f"hetrt reads only files that belong to the model's folder alone")
        if offset + want > st.st_size:
            raise ParserError(f"tensor '{tensor.name}': external data '{path}' holds {st.st_size} bytes, the "
                              f"tensor needs {want} from offset {offset}")
        f.seek(offset)
        data = f.read(want)
    if len(data) != want:
        raise ParserError(f"tensor '{tensor.name}': external data '{path}' ended early")
    return data


def load_external_data(model: onnx.ModelProto, model_path: Path) -> None:
    """Replace every external reference of ``model`` by its bytes, read under containment."""
    base = model_path.parent if str(model_path.parent) else Path(".")
    for tensor in iter_tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        tensor.raw_data = read_contained(tensor, base)
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]

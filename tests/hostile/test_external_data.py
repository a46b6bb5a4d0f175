"""External data stays inside the model's folder (audit finding 1), whatever onnx version is installed."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from backends.reference.executor import execute
from engine.ir.errors import ParserError
from engine.onnx_parser import parse

SECRET = b"root:x:0:0:root:/root:/bin/bash\n" * 8  # 256 bytes, the size of the 8x8 float32 weight


def _model(rng) -> tuple[onnx.ModelProto, np.ndarray]:
    w = rng.normal(size=(8, 8)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), w


def _save(tmp_path, rng, location="w.bin"):
    folder = tmp_path / "model"
    folder.mkdir()
    model, w = _model(rng)
    path = folder / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)
    if location != "w.bin":
        _relocate(path, location)
    return path, w


def _relocate(path, location, **fields) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    ext = proto.graph.initializer[0].external_data
    for e in ext:
        if e.key == "location":
            e.value = location
        if e.key in fields:
            e.value = str(fields.pop(e.key))
    for k, v in fields.items():
        ext.add(key=k, value=str(v))
    onnx.save(proto, str(path))


@pytest.fixture
def rng():
    return np.random.default_rng(11)


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "secret.txt"  # outside the model's folder
    p.write_bytes(SECRET)
    return p


def test_contained_external_data_loads_and_matches(tmp_path, rng):
    path, w = _save(tmp_path, rng)
    x = rng.normal(size=(1, 8)).astype(np.float32)
    np.testing.assert_allclose(execute(parse(path), {"x": x})["y"], x @ w, rtol=1e-5, atol=1e-6)


def test_symlinked_external_data_outside_the_folder_is_refused(tmp_path, rng, secret):
    """Finding 1: a symlink inside the model folder made the build read another file into the plan."""
    path, _ = _save(tmp_path, rng)
    os.remove(path.parent / "w.bin")
    os.symlink(secret, path.parent / "w.bin")
    with pytest.raises(ParserError, match=r"tensor 'w'.*symbolic link"):
        parse(path)


def test_symlinked_folder_is_refused(tmp_path, rng, secret):
    path, _ = _save(tmp_path, rng, location="sub/secret.txt")
    os.symlink(secret.parent, path.parent / "sub")
    with pytest.raises(ParserError, match=r"tensor 'w'.*symbolic link"):
        parse(path)


def test_symlink_inside_the_folder_is_refused_too(tmp_path, rng):
    path, _ = _save(tmp_path, rng)
    os.rename(path.parent / "w.bin", path.parent / "real.bin")
    os.symlink("real.bin", path.parent / "w.bin")
    with pytest.raises(ParserError, match="symbolic link"):
        parse(path)


@pytest.mark.parametrize("location", ["../secret.txt", "/etc/passwd", "sub/../../secret.txt", "", "a\\..\\b"])
def test_paths_out_of_the_folder_are_refused(tmp_path, rng, secret, location):
    path, _ = _save(tmp_path, rng, location=location)
    with pytest.raises(ParserError, match="tensor 'w': external data location"):
        parse(path)


def test_hard_link_is_refused(tmp_path, rng, secret):
    path, _ = _save(tmp_path, rng)
    os.remove(path.parent / "w.bin")
    os.link(secret, path.parent / "w.bin")
    with pytest.raises(ParserError, match="hard links"):
        parse(path)


@pytest.mark.parametrize(("fields", "match"), [
    ({"length": 128}, "does not match its declared size 256"),
    ({"length": 2**62}, "does not match its declared size"),
    ({"offset": 8}, "holds 256 bytes, the tensor needs 256 from offset 8"),
    ({"offset": -1}, "offset -1 is negative"),
    ({"offset": "0x10"}, "is not an integer"),
])
def test_offset_and_length_must_fit_the_declared_tensor(tmp_path, rng, fields, match):
    path, _ = _save(tmp_path, rng)
    _relocate(path, "w.bin", **fields)
    with pytest.raises(ParserError, match=match):
        parse(path)


def test_short_file_is_refused(tmp_path, rng):
    path, _ = _save(tmp_path, rng)
    (path.parent / "w.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ParserError, match="holds 100 bytes, the tensor needs 256"):
        parse(path)


def test_missing_file_is_a_parser_error(tmp_path, rng):
    path, _ = _save(tmp_path, rng)
    os.remove(path.parent / "w.bin")
    with pytest.raises(ParserError, match="cannot open external data"):
        parse(path)

"""The plugin registry: schemas from signatures, duplicates refused, versions, field validation."""

from __future__ import annotations

import numpy as np
import pytest

from engine import plugin
from engine.ir.plugin_registry import PluginArray, canonical_fields, check_stored_fields

ZEROS2 = np.zeros(2, np.float32)
ZEROS1 = np.zeros(1, np.float32)


@pytest.fixture
def ns(request):
    """A namespace unique to the test; its plugins are removed afterwards."""
    name = f"t{abs(hash(request.node.name)) % 10**8}"
    yield name
    for spec in plugin.registered():
        if spec.namespace == name:
            plugin.deregister(spec.key, spec.version)


def test_schema_from_signature(ns):
    @plugin.register(f"{ns}::op", version="2")
    def shape(x: plugin.TensorDesc, y: plugin.TensorDesc, k: int, alpha: float = 0.5, mode: str = "a",
              dims: list[int] = (1, 2), scales: list[float] = (), table: np.ndarray = ZEROS2):
        return x.like()

    spec = plugin.find(f"{ns}::op")
    assert spec.version == "2" and spec.num_inputs == 2
    assert [(f.name, f.type) for f in spec.fields] == [("k", "int"), ("alpha", "float"), ("mode", "str"),
                                                        ("dims", "ints"), ("scales", "floats"), ("table", "array")]
    assert spec.field("k").required and not spec.field("alpha").required
    assert spec in plugin.registered()


def test_duplicates_refused_versions_coexist(ns):
    def shape(x: plugin.TensorDesc) -> plugin.TensorDesc:
        return x

    plugin.register(f"{ns}::dup", version="1")(shape)
    with pytest.raises(plugin.PluginError, match="already registered"):
        plugin.register(f"{ns}::dup", version="1")(shape)
    plugin.register(f"{ns}::dup", version="10")(shape)
    assert plugin.find(f"{ns}::dup").version == "10"  # highest version, numerically
    assert plugin.find(f"{ns}::dup", "1").version == "1"
    plugin.impl(f"{ns}::dup", backend="reference", version="1")(lambda x: x)
    with pytest.raises(plugin.PluginError, match="already has a reference implementation"):
        plugin.impl(f"{ns}::dup", backend="reference", version="1")(lambda x: x)
    with pytest.raises(plugin.PluginError, match="backend must be one of"):
        plugin.impl(f"{ns}::dup", backend="tpu")
    with pytest.raises(plugin.PluginError, match="version 3 is not registered.*1, 10"):
        plugin.find(f"{ns}::dup", "3")


@pytest.mark.parametrize("bad", ["", "a::", "::b", "a b::c", 7])
def test_bad_names(bad):
    with pytest.raises(plugin.PluginError):
        plugin.register(bad)


def test_bad_signatures(ns):
    with pytest.raises(plugin.PluginError, match="needs a type annotation"):
        plugin.register(f"{ns}::a")(lambda x: x)
    with pytest.raises(plugin.PluginError, match="not a plugin field type"):
        def f(x: plugin.TensorDesc, d: dict):
            return x
        plugin.register(f"{ns}::b")(f)
    with pytest.raises(plugin.PluginError, match="must come before the fields"):
        def g(k: int, x: plugin.TensorDesc):
            return x
        plugin.register(f"{ns}::c")(g)
    with pytest.raises(plugin.PluginError, match="default must be an int"):
        def h(x: plugin.TensorDesc, k: int = 1.5):
            return x
        plugin.register(f"{ns}::d")(h)


def test_field_validation(ns):
    @plugin.register(f"{ns}::f")
    def shape(x: plugin.TensorDesc, k: int, dims: list[int] = (), table: np.ndarray = ZEROS1):
        return x

    spec = plugin.find(f"{ns}::f")
    fields = canonical_fields(spec, {"k": np.int64(3), "dims": [1, 2], "table": np.arange(4, dtype=np.int32)}, "t")
    assert fields[0] == ("k", "int", 3) and fields[1] == ("dims", "ints", (1, 2))
    assert fields[2][2] == PluginArray("int32", (4,), (0, 1, 2, 3))
    check_stored_fields(spec, fields, "t")
    for given, msg in [({}, "needs field 'k'"), ({"k": 1.5}, "must be an int"), ({"k": True}, "must be an int"),
                       ({"k": 1, "zz": 2}, "no field"), ({"k": 1, "dims": [1, "a"]}, r"dims'\[1\] must be an int"),
                       ({"k": 1, "table": np.zeros(2, np.complex64)}, "array dtype")]:
        with pytest.raises(plugin.PluginError, match=msg):
            canonical_fields(spec, given, "t")
    for stored, msg in [((("k", "float", 1.0),) + fields[1:], "stored as 'float'"),
                        (fields[:1], "do not match"),
                        ((("k", "int", "3"),) + fields[1:], "must be an int"),
                        (fields[:2] + (("table", "array", PluginArray("int32", (5,), (1, 2))),), "shape"),
                        (fields[:2] + (("table", "array", PluginArray("int8", (1,), (300,))),), "do not fit"),
                        ("junk", "must be a list")]:
        with pytest.raises(plugin.PluginError, match=msg):
            check_stored_fields(spec, stored, "t")


def test_shape_function_errors_name_the_plugin(ns):
    @plugin.register(f"{ns}::boom")
    def shape(x: plugin.TensorDesc):
        raise ValueError("no good")

    from engine.ir.errors import NetworkError
    from engine.ir.layers import PluginParams
    from engine.ir.network import Network

    net = Network()
    net.add_input("x", (1, 2))
    with pytest.raises(NetworkError, match=f"plugin '{ns}::boom' version 1: shape function failed: ValueError"):
        net.add_layer(PluginParams("boom", "1", ns), ["x"])
    with pytest.raises(NetworkError, match="is not registered"):
        net.add_layer(PluginParams("nothing", "1", ns), ["x"])


def test_fp32_only_plugin_stays_fp32_in_an_fp16_build(ns):
    import onnx
    from onnx import TensorProto, helper

    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.dtypes import Precision
    from engine.ir.layers import LayerKind
    from engine.plan import deserialize
    from engine.runtime import Runtime

    @plugin.register(f"{ns}::exact", precisions=("fp32",))
    def shape(x: plugin.TensorDesc) -> plugin.TensorDesc:
        return x.like()

    @plugin.impl(f"{ns}::exact")
    def ref(x):
        return x * np.float32(1.0001)

    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("exact", ["x"], ["y"], domain=ns)], "g",
                              [vi("x", TensorProto.FLOAT, [1, 8])], [vi("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ns, 1)])
    data = build_from_onnx(onnx.ModelProto.FromString(model.SerializeToString()), BuilderConfig(fp16=True))
    layer = next(la for la in deserialize(data).network.layers if la.kind is LayerKind.PLUGIN)
    assert layer.precision is Precision.FP32
    x = np.random.default_rng(3).standard_normal((1, 8)).astype(np.float32)
    y = Runtime().deserialize(data).create_execution_context().execute({"x": x})["y"]
    np.testing.assert_array_equal(y, x * np.float32(1.0001))  # no float16 rounding anywhere


def test_onnx_attributes_of_every_field_type(ns):
    """int, float, str, ints, floats and tensor attributes → typed fields → plan → the same values."""
    from onnx import TensorProto, helper, numpy_helper

    from engine.builder import BuilderConfig, build_from_onnx
    from engine.ir.errors import ParserError
    from engine.plan import deserialize, serialize
    from engine.runtime import Runtime

    @plugin.register(f"{ns}::mix")
    def shape(x: plugin.TensorDesc, k: int, a: float, mode: str, perm: list[int], w: list[float],
              table: np.ndarray) -> plugin.TensorDesc:
        return x.like()

    @plugin.impl(f"{ns}::mix")
    def ref(x, k, a, mode, perm, w, table):
        y = x[:, perm] * np.asarray(w, np.float32) + table
        return (y * k + a) if mode == "affine" else y

    table = np.random.default_rng(1).standard_normal((1, 3)).astype(np.float32)
    attrs = {"k": 3, "a": 0.25, "mode": "affine", "perm": [2, 0, 1], "w": [0.5, -1.0, 2.0],
             "table": numpy_helper.from_array(table)}
    vi = helper.make_tensor_value_info

    def model(**extra):
        node = helper.make_node("mix", ["x"], ["y"], domain=ns, name="m", **{**attrs, **extra})
        io = [vi("x", TensorProto.FLOAT, [2, 3])], [vi("y", TensorProto.FLOAT, [2, 3])]
        graph = helper.make_graph([node], "g", *io)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ns, 1)])

    data = build_from_onnx(model())
    assert serialize(deserialize(data)) == data
    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    y = Runtime().deserialize(data).create_execution_context().execute({"x": x})["y"]
    np.testing.assert_allclose(y, (x[:, [2, 0, 1]] * np.float32([0.5, -1, 2]) + table) * 3 + 0.25, rtol=1e-6)
    with pytest.raises(ParserError, match="node 'm'.*field 'k' must be an int, got float"):
        build_from_onnx(model(k=1.5), BuilderConfig())
    with pytest.raises(ParserError, match="has no field.*zzz"):
        build_from_onnx(model(zzz=1), BuilderConfig())

"""The plan file: bit-identical round trips and a PlanError (never anything else) for bad bytes."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import numpy as np
import pytest

from engine import __version__
from engine import plan as P
from engine.ir.dtypes import DataType, Precision
from engine.ir.errors import PlanError
from engine.ir.layers import ConcatenationParams, GatherParams
from engine.ir.network import Network
from engine.runtime import Runtime


def small_network() -> Network:
    """A few layers covering weights of several dtypes, a constant, a gather and an in-place concat."""
    rng = np.random.default_rng(7)
    n = Network("small")
    x = n.add_input("x", (1, 3, 6, 6))
    a = n.add_convolution(x, rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                          rng.standard_normal(4).astype(np.float32), padding=(1, 1), name="conv1")
    a = n.add_activation(a, "relu", name="relu1")
    b = n.add_convolution(a, rng.standard_normal((2, 4, 1, 1)).astype(np.float16), name="conv2")
    n.layer("conv2").precision = Precision.FP16
    c = n.add_constant(rng.standard_normal((1, 2, 6, 6)).astype(np.float32), name="const")
    g = n.add_layer(GatherParams(axis=1), [a], {"indices": np.array([3, 0], dtype=np.int64)}, name="gather")
    cat = n.add_layer(ConcatenationParams(axis=1, in_place=True), [b, c, g.outputs[0]], name="cat")
    y = n.add_activation(cat.outputs[0], "sigmoid", name="out")
    n.mark_output(y)
    n.validate()
    return n


def small_contents(platform: str = "host") -> P.PlanContents:
    return P.PlanContents(
        network=small_network(),
        platform=platform,
        build_config={"fp16": True, "platform": platform},
        placement={"partitions": [{"device": "gpu", "backend": "reference",
                                   "layers": ["conv1", "relu1", "conv2", "const", "gather", "cat", "out"]}]},
        tactics={"conv1": "igemm_64x64_w2x2_s4_k1"},
        loadables=[b"\x00DLA-loadable\xff" * 3, b""],
        memory_plan={"peak_bytes": 1},
        metadata={"note": "unicode ✓", "inf": float("inf")},
    )


@pytest.fixture(scope="module")
def data() -> bytes:
    return P.serialize(small_contents())


def split(data: bytes) -> tuple[dict, bytes]:
    """The manifest and the blob area of a valid plan."""
    payload = data[P.HEADER_SIZE:]
    (m_len,) = struct.unpack_from("<Q", payload)
    manifest = json.loads(payload[8:8 + m_len])
    return manifest, payload[-(-(8 + m_len) // 64) * 64:]


def forge(manifest: dict | bytes, area: bytes, platform: str = "host", **header) -> bytes:
    """A plan with correct checksums around any manifest and blob area."""
    m = manifest if isinstance(manifest, bytes) else json.dumps(manifest, sort_keys=True,
                                                                separators=(",", ":")).encode()
    head = struct.pack("<Q", len(m)) + m
    payload = head + b"\0" * (-len(head) % 64) + area
    return P.encode_header(payload, platform, **header) + payload


# ------------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_identical(data):
    again = P.serialize(P.deserialize(data))
    assert again == data
    assert P.serialize(P.deserialize(again)) == data


def test_round_trip_preserves_contents(data):
    want = small_contents()
    got = P.deserialize(data)
    assert got.platform == "host"
    assert got.build_config == want.build_config and got.tactics == want.tactics
    assert got.placement == want.placement and got.metadata == want.metadata
    assert got.loadables == want.loadables
    a, b = want.network, got.network
    assert (a.name, a.inputs, a.outputs) == (b.name, b.inputs, b.outputs)
    assert list(a.tensors) == list(b.tensors)
    assert all(a.tensors[t].info == b.tensors[t].info for t in a.tensors)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (la.name, la.params, la.inputs, la.outputs, la.precision, la.device, la.origin) == \
               (lb.name, lb.params, lb.inputs, lb.outputs, lb.precision, lb.device, lb.origin)
        assert sorted(la.weights) == sorted(lb.weights)
        for k in la.weights:
            assert la.weights[k].dtype == lb.weights[k].dtype
            np.testing.assert_array_equal(la.weights[k], lb.weights[k])


def test_serialization_is_deterministic():
    c = small_contents()
    c2 = small_contents()
    c2.network = c2.network.copy()
    assert P.serialize(c) == P.serialize(c) == P.serialize(c2)


def test_header_layout(data):
    assert data[:8] == b"HETRTPLN"
    major, minor, hsize = struct.unpack_from("<HHI", data, 8)
    assert (major, minor, hsize) == (P.FORMAT_MAJOR, P.FORMAT_MINOR, 128)
    assert data[16:40].rstrip(b"\0").decode() == __version__
    assert data[40:72].rstrip(b"\0") == b"host"
    (plen,) = struct.unpack_from("<Q", data, 72)
    assert plen == len(data) - 128 and len(data) % 64 == 0
    assert data[80:112] == hashlib.sha256(data[128:]).digest()
    assert data[112:128] == hashlib.sha256(data[:112]).digest()[:16]
    header = P.read_header(data)
    assert header.producer == __version__ and header.platform == "host" and header.format_version == "1.0"


def test_blobs_are_aligned_little_endian(data):
    manifest, area = split(data)
    area_start = len(data) - len(area)
    assert area_start % 64 == 0
    kernel = small_network().layer("conv1").weights["kernel"]
    found = False
    for e in manifest["blobs"]:
        assert (area_start + e["offset"]) % 64 == 0
        raw = area[e["offset"]:e["offset"] + e["length"]]
        if e["dtype"] == "float32" and e["shape"] == list(kernel.shape):
            found = raw == kernel.astype("<f4").tobytes()
    assert found


# ------------------------------------------------------------------------------- robustness


def test_truncation_at_every_offset_is_a_plan_error(data):
    for k in range(len(data)):
        with pytest.raises(PlanError, match="truncated") as info:
            P.deserialize(data[:k])
        assert type(info.value) is PlanError


def test_appended_bytes_are_a_plan_error(data):
    with pytest.raises(PlanError, match="unexpected bytes after"):
        P.deserialize(data + b"\0")


def test_random_byte_flips_are_all_plan_errors(data):
    rng = np.random.default_rng(2024)
    header_hits = 0
    for i in range(1000):
        corrupt = bytearray(data)
        count = 1 if i % 2 == 0 else int(rng.integers(2, 9))
        for pos in rng.choice(len(data), size=count, replace=False):
            corrupt[pos] ^= int(rng.integers(1, 256))
            header_hits += pos < P.HEADER_SIZE
        with pytest.raises(PlanError, match="corrupt|not a hetrt plan|truncated") as info:
            P.deserialize(bytes(corrupt))
        assert type(info.value) is PlanError
    assert header_hits > 20  # the header fields were hit too, not only the payload


@pytest.mark.parametrize("pos", range(P.HEADER_SIZE))
def test_every_header_byte_is_covered(data, pos):
    corrupt = bytearray(data)
    corrupt[pos] ^= 0x01
    with pytest.raises(PlanError, match="corrupt|not a hetrt plan"):
        P.deserialize(bytes(corrupt))


@pytest.mark.parametrize("blob", [b"", b"GGUF\x03\x00\x00\x00" + b"\0" * 200, b"PK\x03\x04" + b"\0" * 300,
                                  pickle.dumps({"network": [1, 2, 3]}), b"\x89PNG\r\n\x1a\n" * 40])
def test_foreign_files_are_rejected(blob):
    with pytest.raises(PlanError, match="not a hetrt plan|truncated"):
        P.deserialize(blob)


def test_wrong_magic_message(data):
    with pytest.raises(PlanError, match=r"not a hetrt plan: magic b'HETRTPLX'"):
        P.deserialize(b"HETRTPLX" + data[8:])


def test_pickle_payload_with_valid_checksums_is_a_plan_error():
    payload = pickle.dumps(small_contents().metadata, protocol=4)
    with pytest.raises(PlanError):
        P.deserialize(P.encode_header(payload, "host") + payload)
    with pytest.raises(PlanError, match="not valid JSON"):
        P.deserialize(forge(pickle.dumps({"a": 1}), b""))


def test_newer_major_is_rejected_with_advice(data):
    _, payload = data[:128], data[128:]
    newer = P.encode_header(payload, "host", major=3, minor=0, producer="9.9.9") + payload
    with pytest.raises(PlanError, match=r"plan format 3\.0 \(written by hetrt 9\.9\.9\) is newer than this hetrt "
                                        rf"{__version__} \(supports <= 1\.x\); rebuild the plan with hetrt"):
        P.deserialize(newer)


def test_older_and_newer_minor_are_accepted_older_major_is_not(data):
    payload = data[128:]
    newer_minor = P.encode_header(payload, "host", minor=7) + payload
    assert P.deserialize(newer_minor).network.name == "small"
    with pytest.raises(PlanError, match="older"):
        P.deserialize(P.encode_header(payload, "host", major=0) + payload)


def test_platform_mismatch():
    data = P.serialize(small_contents("orin-agx-64gb"))
    assert P.deserialize(data, expected_platform="orin-agx-64gb").platform == "orin-agx-64gb"
    msg = "plan was built for platform 'orin-agx-64gb', this runtime targets 'xavier-agx'"
    with pytest.raises(PlanError, match=msg):
        P.deserialize(data, expected_platform="xavier-agx")
    with pytest.raises(PlanError, match=msg):
        Runtime(platform="xavier-agx").deserialize(data)
    assert Runtime(platform="orin-agx-64gb").deserialize(data).platform == "orin-agx-64gb"


def test_unknown_platform(data):
    payload = data[128:]
    with pytest.raises(PlanError, match="plan targets unknown platform 'mars-rover'"):
        P.deserialize(P.encode_header(payload, "mars-rover") + payload)
    c = small_contents()
    c.platform = "mars-rover"
    with pytest.raises(PlanError, match="unknown platform 'mars-rover'"):
        P.serialize(c)


# ------------------------------------------------------------------------------- manifest schema


def _mutated(data: bytes, change) -> bytes:
    manifest, area = split(data)
    change(manifest)
    return forge(manifest, area)


def _layer(manifest: dict, name: str) -> dict:
    return next(la for la in manifest["network"]["layers"] if la["name"] == name)


@pytest.mark.parametrize("change, message", [
    (lambda m: _layer(m, "conv1").update(kind="warp_drive"), r"layer 'conv1': unknown layer kind 'warp_drive'"),
    (lambda m: _layer(m, "conv1")["params"].update(bogus=1), r"layer 'conv1': bad convolution parameters"),
    (lambda m: _layer(m, "conv1")["params"].update(kernel="3x3"), r"layer 'conv1'"),
    (lambda m: _layer(m, "conv1")["params"].update(num_output_maps=5), r"layer 'conv1'"),
    (lambda m: _layer(m, "conv1")["params"].pop("stride"), r"layer 'conv1': bad convolution parameters"),
    (lambda m: _layer(m, "relu1")["params"]["activation"].update(type={"$enum": "Nope", "v": 1}),
     r"layer 'relu1': bad activation parameters"),
    (lambda m: _layer(m, "conv1")["weights"].update(kernel=999), r"layer 'conv1' weights 'kernel': blob index 999"),
    (lambda m: _layer(m, "conv1")["weights"].update(kernel="0"), r"blob index '0'"),
    (lambda m: _layer(m, "relu1").update(inputs=["ghost"]), r"layer 'relu1': tensor 'ghost' is not defined"),
    (lambda m: _layer(m, "relu1").update(precision="fp4"), r"layer 'relu1': unknown precision 'fp4'"),
    (lambda m: _layer(m, "relu1").pop("origin"), r"layer 3|layer 1"),
    (lambda m: m["network"]["tensors"][0].update(dtype="complex64"), r"tensor 'x': unknown dtype 'complex64'"),
    (lambda m: m["network"]["tensors"][0].update(shape=[1, -3]), r"tensor 'x': shape"),
    (lambda m: m["network"]["tensors"][0].update(shape=[2**20, 2**20, 2**10]), r"larger than"),
    (lambda m: m["network"].update(outputs=[]), r"network is invalid: .*no marked outputs"),
    (lambda m: m["network"].update(inputs=["nope"]), r"I/O tensor 'nope' is not defined"),
    (lambda m: m["network"]["layers"].reverse(), r"network is invalid: .*before it is produced"),
    (lambda m: m["blobs"][0].update(length=m["blobs"][0]["length"] + 4), r"blob 0: float32 .* needs"),
    (lambda m: m["blobs"][0].update(shape=[9, 9]), r"blob 0: float32 \[9, 9\] needs"),
    (lambda m: m["blobs"][0].update(dtype="object"), r"blob 0: unknown dtype 'object'"),
    (lambda m: m["blobs"][1].update(offset=m["blobs"][1]["offset"] + 64), r"blob 1: offset"),
    (lambda m: m["blobs"].append({"dtype": "uint8", "shape": [4], "offset": 0, "length": 4}), r"blob area"),
    (lambda m: m.pop("tactics"), r"manifest is missing tactics"),
    (lambda m: m.update(extra=1), r"unknown keys extra"),
    (lambda m: m.update(placement=[]), r"'placement' must be dict"),
    (lambda m: m.update(loadables=[0]), r"referenced twice|must be 1-D uint8"),
])
def test_manifest_errors_are_precise(data, change, message):
    with pytest.raises(PlanError, match=message) as info:
        P.deserialize(_mutated(data, change))
    assert type(info.value) is PlanError


def test_non_object_manifests(data):
    _, area = split(data)
    for m in (b"[]", b"null", b"\"x\"", b"{" * 100000, b"\xff\xfe", b"{\"a\": NaN"):
        with pytest.raises(PlanError):
            P.deserialize(forge(m, area))


def test_bool_blob_with_other_bytes():
    n = Network("b")
    x = n.add_input("x", (3,), DataType.BOOL)
    c = n.add_constant(np.array([True, False, True]), name="mask")
    n.mark_output(n.add_elementwise(x, c, "and", name="y"))
    data = P.serialize(P.PlanContents(n))
    manifest, area = split(data)
    bad = bytearray(area)
    bad[manifest["blobs"][0]["offset"]] = 2
    with pytest.raises(PlanError, match="bool blob"):
        P.deserialize(forge(manifest, bytes(bad)))


def test_serialize_rejects_what_a_plan_cannot_hold():
    c = small_contents()
    c.build_config = {"when": object()}
    with pytest.raises(PlanError, match="plan build_config"):
        P.serialize(c)
    c = small_contents()
    c.network.layer("conv1").weights["kernel"] = np.zeros((4, 3, 3, 3), dtype=np.complex64)
    with pytest.raises(PlanError, match="layer 'conv1'.*weights 'kernel'.*complex64"):
        P.serialize(c)
    c = small_contents()
    c.loadables = ["not bytes"]
    with pytest.raises(PlanError, match="DLA loadable 0 must be bytes"):
        P.serialize(c)


def test_non_bytes_input():
    with pytest.raises(PlanError, match="a plan is bytes"):
        P.deserialize("HETRTPLN")  # type: ignore[arg-type]

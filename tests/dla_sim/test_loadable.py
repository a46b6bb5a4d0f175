"""Loadable: structure (fusion, ping-pong), bit-identical round trip, refusal of malformed bytes."""

import hashlib
import struct

import numpy as np
import pytest

from dla_sim import formats as F
from dla_sim.loadable import Loadable, LoadableError, TensorEntry
from dla_sim.ops import ConvOp, CubeDesc, PdpOp, Precision, Requant, SdpOp


def _net() -> Loadable:
    rng = np.random.default_rng(61)
    a = CubeDesc(c=16, h=8, w=8, name="a")
    b = CubeDesc(c=32, h=8, w=8, name="b")
    p = CubeDesc(c=32, h=4, w=4, name="p")
    q = CubeDesc(c=32, h=2, w=2, name="q")
    wt = rng.integers(-128, 128, (32, 16, 3, 3)).astype(np.int8)
    wl = F.weight_layout_dc(32, 16, 3, 3, 1)
    ops = [
        ConvOp(name="c1", input=a, output=b, kernel=(3, 3), pad=(1, 1, 1, 1), inputs=("a", "w1"), outputs=()),
        SdpOp(name="s1", input=b, output=b, bias="per_channel", activation="relu",
              out_requant=Requant(scale=(3,) * 32, shift=(9,) * 32), inputs=("bias1",), outputs=()),
        PdpOp(name="p1", input=b, output=p, kernel=(2, 2), stride=(2, 2), inputs=(), outputs=("p",)),
        PdpOp(name="p2", input=p, output=q, kernel=(2, 2), stride=(2, 2), source="memory", mode="avg",
              pad_value=-3.0, inputs=("p",), outputs=("q",)),
        ConvOp(name="c2", input=CubeDesc(c=32, h=2, w=2, precision=Precision.INT8), output=q, kernel=(1, 1),
               inputs=("q", "w1"), outputs=("out",)),
    ]
    tensors = [
        TensorEntry("a", "dram", 0, 4096, "input", cube=a),
        TensorEntry("w1", "dram", 4096, wl.total_bytes, "weight", blob="w1"),
        TensorEntry("bias1", "dram", 16384, 64, "operand", blob="bias1"),
        TensorEntry("p", "sram", 0, 1024, "intermediate", cube=p),
        TensorEntry("q", "dram", 20480, 256, "intermediate", cube=q),
        TensorEntry("out", "dram", 24576, 256, "output", cube=q),
    ]
    blobs = {"w1": F.pack_weights_dc(wt, wl), "bias1": rng.integers(-3000, 3000, 32).astype(np.int16)}
    return Loadable("net", ops, tensors, blobs, config_name="nv_full", meta={"batch": 1, "note": "x"})


def test_pipelines_and_ping_pong():
    ld = _net()
    assert ld.pipelines() == [(0, 1, 2), (3,), (4,)]
    # per unit alternate 0/1: conv c1=0, c2=1; sdp s1=0; pdp p1=0, p2=1
    assert ld.register_groups() == (0, 0, 0, 1, 1)


def test_round_trip_bit_identical():
    ld = _net()
    data = ld.to_bytes()
    back = Loadable.from_bytes(data)
    assert back.to_bytes() == data
    assert back.ops == ld.ops
    assert back.tensors == ld.tensors
    for k, v in ld.blobs.items():
        assert back.blobs[k].dtype == v.dtype and np.array_equal(back.blobs[k], v)
    assert back.meta == ld.meta and back.config_name == "nv_full"


def _rehash(data: bytes, manifest: bytes) -> bytes:
    head = struct.Struct("<8sHHIQQ32s")
    magic, ma, mi, r, mlen, blen, _ = head.unpack_from(data)
    region = data[head.size + mlen :]
    digest = hashlib.sha256(manifest + region).digest()
    return head.pack(magic, ma, mi, r, len(manifest), blen, digest) + manifest + region


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda d: d[:20], "truncated"),
        (lambda d: b"XXXXXXXX" + d[8:], "bad magic"),
        (lambda d: d[:8] + struct.pack("<H", 9) + d[10:], "unsupported format version 9"),
        (lambda d: d + b"\0", "does not match header"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "checksum mismatch"),
    ],
)
def test_malformed_bytes_raise_precise_errors(mutate, msg):
    with pytest.raises(LoadableError, match=msg):
        Loadable.from_bytes(mutate(_net().to_bytes()))


def _manifest(data: bytes) -> bytes:
    head = struct.Struct("<8sHHIQQ32s")
    mlen = head.unpack_from(data)[4]
    return data[head.size : head.size + mlen]


@pytest.mark.parametrize(
    "old,new,msg",
    [
        (b'"__type__":"SdpOp"', b'"__type__":"os.system"', "unknown descriptor type 'os.system'"),
        (b'"dtype":"int16"', b'"dtype":"object"', "dtype 'object' not allowed"),
        (b'"__enum__":"Precision","value":"int8"', b'"__enum__":"Precision","value":"int4"', "bad Precision"),
        (b'"activation":"relu"', b'"activation":"relu","evil":1', "unknown fields"),
    ],
)
def test_malformed_manifest_raises(old, new, msg):
    data = _net().to_bytes()
    m = _manifest(data)
    assert old in m
    with pytest.raises(LoadableError, match=msg):
        Loadable.from_bytes(_rehash(data, m.replace(old, new, 1)))


def test_construction_checks_wiring():
    ld = _net()
    ops = list(ld.ops)
    with pytest.raises(LoadableError, match="before any op writes it"):
        Loadable("x", [ops[3]], list(ld.tensors.values()), ld.blobs)
    with pytest.raises(LoadableError, match="missing blob"):
        Loadable("x", [], [TensorEntry("w", "dram", 0, 4, "weight", blob="nope")])
    with pytest.raises(LoadableError, match="flying but does not follow"):
        Loadable("x", [ops[2]], list(ld.tensors.values()), ld.blobs).pipelines()

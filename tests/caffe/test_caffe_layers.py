"""Each Caffe layer type against its ONNX equivalent (through the runtime), Caffe's pooling against
a float64 numpy model of Caffe's own loops, and the inputs, naming and weights rules."""

from __future__ import annotations

import numpy as np
import pytest
from netdsl import Net
from test_caffe_models import QUIET, compare, run_plan

from engine.builder import BuilderConfig
from engine.caffe_parser import build_from_caffe, parse


def small(seed: int = 5, shape=(2, 6, 9, 9)) -> Net:
    return Net("layers", shape, seed)


CASES = {
    "conv_hw_dilation": lambda n: n.conv("c", "data", 8, (3, 2), stride=(2, 1), pad=(1, 0), hw=True, dilation=2),
    "conv_rect_repeated": lambda n: n.conv("c", "data", 5, (3, 2), stride=(2, 1), pad=(1, 0)),
    "conv_group_nobias": lambda n: n.conv("c", "data", 6, 3, group=3, bias=False),
    "deconv": lambda n: n.conv("d", "data", 4, 4, stride=2, pad=1, deconv=True),
    "deconv_group": lambda n: n.conv("d", "data", 6, 3, stride=2, group=2, deconv=True),
    "max_pool_pad_ceil": lambda n: n.pool("p", "data", "MAX", 3, 2, pad=1),
    "ave_pool_pad_ceil": lambda n: n.pool("p", "data", "AVE", 3, 2, pad=1),
    "ave_pool_ceil": lambda n: n.pool("p", "data", "AVE", 2, 2),
    "global_max": lambda n: n.pool("p", "data", "MAX", global_pool=True),
    "global_ave": lambda n: n.pool("p", "data", "AVE", global_pool=True),
    "ip_transpose": lambda n: n.ip("fc", "data", 7, transpose=True),
    "relu_leaky": lambda n: n.relu("r", "data", top="r", slope=0.1),
    "prelu": lambda n: n.prelu("p", "data", top="p"),
    "prelu_shared": lambda n: n.prelu("p", "data", top="p", shared=True),
    "sigmoid_tanh": lambda n: n.tanh("t", n.sigmoid("s", "data", top="s"), top="t"),
    "power": lambda n: n.power("pw", "data", power=2.0, scale=0.5, shift=1.5),
    "lrn": lambda n: n.lrn("n", "data", 3, 0.5, 0.75, 2.0),
    "bn_scale": lambda n: n.scale("sc", n.batchnorm("bn", "data", top="bn"), top="sc"),
    "eltwise_coeff": lambda n: n.eltwise("e", [n.relu("r", "data", top="r"), "data"], "SUM", coeff=[0.5, -2.0]),
    "eltwise_prod": lambda n: n.eltwise("e", [n.sigmoid("s", "data", top="s"), "data"], "PROD"),
    "eltwise_max3": lambda n: n.eltwise("e", [n.tanh("t", "data", top="t"), "data", n.sigmoid("s", "data", top="s")],
                                        "MAX"),
    "slice_concat": lambda n: n.concat("cat", list(reversed(n.slice("sl", "data", ["a", "b", "c"], [1, 4])))),
    "flatten_softmax": lambda n: n.softmax("sm", n.flatten("f", "data")),
    "reshape": lambda n: n.reshape("rs", "data", [0, 3, -1, 9]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_matches_onnx(name, tmp_path):
    n = small()
    out = CASES[name](n)
    compare(n, out, tmp_path)


def _caffe_pool_reference(x: np.ndarray, method: str, k, s, pad) -> np.ndarray:
    """Caffe's pooling loops (pooling_layer.cpp semantics) in float64: output size rounded up, a
    last window starting in the padding dropped, AVE dividing by the window clipped to the padded
    input, MAX over the real input only. ``k``, ``s``, ``pad`` are (h, w) pairs."""
    n, c, h, w = x.shape

    def out_len(size, k, s, pad):
        o = -(-(size + 2 * pad - k) // s) + 1
        return o - 1 if pad and (o - 1) * s >= size + pad else o

    oh, ow = out_len(h, k[0], s[0], pad[0]), out_len(w, k[1], s[1], pad[1])
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - pad[0], j * s[1] - pad[1]
            he, we = min(hs + k[0], h + pad[0]), min(ws + k[1], w + pad[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            y[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
    return y


def _pool_case(method: str, size: tuple[int, int], params: str, k, s, pad) -> None:
    text = (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {size[0]} '
            f'dim: {size[1]} }} }} }}\nlayer {{ name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param {{ '
            f'pool: {method} {params} }} }}\n')
    x = np.random.default_rng(sum(size) * k[0]).standard_normal((1, 3, *size)).astype(np.float32)
    got = run_plan(build_from_caffe(text, outputs=["p"], config=BuilderConfig(), logger=QUIET), {"data": x})["p"]
    want = _caffe_pool_reference(x.astype(np.float64), method, k, s, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, k, s, pad", [(9, 3, 2, 1), (10, 3, 2, 1), (7, 2, 2, 0), (11, 4, 3, 2), (6, 3, 3, 1)])
def test_pooling_follows_caffe(method, size, k, s, pad):
    _pool_case(method, (size, size), f"kernel_size: {k} stride: {s} pad: {pad}", (k, k), (s, s), (pad, pad))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_rectangular_pooling_follows_caffe(method):
    _pool_case(method, (9, 12), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1", (3, 2), (2, 3),
               (1, 1))


def test_floor_round_mode():
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }\n'
            'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }\n')
    assert parse(text).tensors["p"].shape == (1, 1, 3, 3)


def test_in_place_chain_keeps_blob_names():
    n = small()
    n.conv("conv", "data", 4, 3)
    n.relu("relu", "conv")
    n.dropout("drop", "conv")
    net = parse(n.prototxt(), n.caffemodel(), outputs=["conv"])
    assert net.outputs == ["conv"]
    assert net.producer("conv").name == "drop"
    assert [la.name for la in net.layers] == ["conv", "relu", "drop"]


def test_default_outputs_are_unread_blobs():
    n = small()
    n.conv("a", "data", 4, 1)
    n.relu("ra", "a")
    n.conv("b", "data", 4, 1)
    net = parse(n.prototxt())
    assert net.outputs == ["a", "b"]


def test_legacy_input_fields_and_batch():
    body = 'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n'
    for head in ('input: "x"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 5\ninput_dim: 5\n',
                 'input: "x"\ninput_shape { dim: 1 dim: 3 dim: 5 dim: 5 }\n'):
        net = parse(head + body, batch=4)
        assert net.inputs == ["x"] and net.tensors["x"].shape == (4, 3, 5, 5)


def test_random_weights_are_seeded_per_layer():
    n = small()
    n.conv("c", "data", 4, 3)
    n.ip("fc", "c", 5)
    a, b, c = (parse(n.prototxt(), seed=s) for s in (0, 0, 1))
    wa, wb, wc = (x.layer("c").weights["kernel"] for x in (a, b, c))
    assert np.array_equal(wa, wb) and not np.array_equal(wa, wc)
    assert np.std(wa) > 0.01
    # a layer's random weights do not depend on the layers before it
    m = small()
    m.sigmoid("s", "data", top="s")
    m.conv("c", "s", 4, 3)
    assert np.array_equal(parse(m.prototxt()).layer("c").weights["kernel"], wa)

"""Bad Caffe input gets one clear error naming the line, the layer or the file."""

from __future__ import annotations

import numpy as np
import pytest
from netdsl import Net

from engine.caffe_parser import caffemodel_bytes, parse
from engine.caffe_parser.schema import NetParameter
from engine.ir.errors import ParserError, UnsupportedError

HEAD = ('name: "t"\n'
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n')


def conv_net() -> Net:
    n = Net("t", (1, 3, 8, 8), 9)
    n.conv("conv", "data", 4, 3)
    n.ip("fc", "conv", 5)
    return n


def test_unsupported_layer_types_are_all_reported_at_once():
    text = HEAD + (
        'layer { name: "prior" type: "PriorBox" bottom: "data" top: "prior" prior_box_param { min_size: 30 } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }\n'
        'layer { name: "crop" type: "Crop" bottom: "r" bottom: "data" top: "crop" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "r" top: "loss" }\n')
    with pytest.raises(UnsupportedError) as e:
        parse(text)
    msg = str(e.value)
    assert "3 layer(s)" in msg
    for part in ("'prior' (PriorBox)", "'crop' (Crop)", "'loss' (SoftmaxWithLoss)"):
        assert part in msg
    assert "'relu'" not in msg


def test_training_only_layers_are_skipped():
    text = HEAD + ('layer { name: "acc" type: "Accuracy" bottom: "data" top: "acc" include { phase: TRAIN } }\n'
                   'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" exclude { phase: TRAIN } }\n')
    assert [la.name for la in parse(text).layers] == ["relu"]


def test_syntax_error_names_the_line():
    text = HEAD + ('layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                   '  convolution_param { num_output: 4 kernal_size: 3 } }\n')
    with pytest.raises(ParserError, match=r"line 4, column 37: .*kernal_size"):
        parse(text)
    with pytest.raises(ParserError, match=r"line 2"):
        parse('name: "t"\nlayer { name: "x" type: "ReLU" bottom: "a" top: "b"\n')


def test_v1_format_is_named():
    with pytest.raises(ParserError, match="V1"):
        parse('name: "old"\nlayers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" }\n')


def test_layer_errors_name_the_layer():
    with pytest.raises(ParserError, match=r"layer 'c' \(type Convolution\): bottom blob 'nope' is not produced"):
        parse(HEAD + 'layer { name: "c" type: "Convolution" bottom: "nope" top: "c" convolution_param '
                     '{ num_output: 4 kernel_size: 3 } }\n')
    with pytest.raises(ParserError, match=r"layer 'c' \(type Convolution\): .*kernel_size"):
        parse(HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param '
                     '{ num_output: 4 } }\n')
    with pytest.raises(ParserError, match=r"layer 'c' \(type Convolution\): group 2 must divide"):
        parse(HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param '
                     '{ num_output: 4 kernel_size: 1 group: 2 } }\n')
    with pytest.raises(ParserError, match=r"layer 'bn' \(type BatchNorm\): use_global_stats: false"):
        parse(HEAD + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" '
                     'batch_norm_param { use_global_stats: false } }\n')
    with pytest.raises(ParserError, match=r"layer 'p' \(type Pooling\): STOCHASTIC"):
        parse(HEAD + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: STOCHASTIC '
                     'kernel_size: 2 } }\n')
    with pytest.raises(ParserError, match=r"layer 'c' \(type Convolution\): .*larger than padded input"):
        parse(HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param '
                     '{ num_output: 4 kernel_size: 9 } }\n')


def test_unknown_output_blob():
    with pytest.raises(ParserError, match=r"output blob 'prob' is not produced .*blobs: conv, data, fc"):
        parse(conv_net().prototxt(), outputs=["prob"])


def test_malformed_caffemodel():
    n = conv_net()
    with pytest.raises(ParserError, match="not a valid caffemodel"):
        parse(n.prototxt(), b"\xff\xff\xff\xff garbage")
    with pytest.raises(ParserError, match="holds no layers"):
        parse(n.prototxt(), b"")


def test_caffemodel_missing_layer_or_wrong_blobs():
    n = conv_net()
    blobs = dict(n.blobs)
    del blobs["fc"]
    with pytest.raises(ParserError, match=r"layer 'fc' \(type InnerProduct\): <caffemodel> has no weights"):
        parse(n.prototxt(), caffemodel_bytes(blobs))
    blobs = dict(n.blobs)
    blobs["conv"] = ("Convolution", [np.zeros((4, 3, 2, 2), np.float32), np.zeros(4, np.float32)])
    with pytest.raises(ParserError, match=r"layer 'conv' .*kernel blob .* has shape \(4, 3, 2, 2\).* needs "
                                          r"\(4, 3, 3, 3\)"):
        parse(n.prototxt(), caffemodel_bytes(blobs))
    blobs["conv"] = ("Convolution", [np.zeros((4, 3, 3, 3), np.float32)])
    with pytest.raises(ParserError, match=r"layer 'conv' .*gives 1 blobs, the layer needs 2 \(kernel, bias\)"):
        parse(n.prototxt(), caffemodel_bytes(blobs))


def test_legacy_4d_blobs_are_read():
    """Old caffemodels store an InnerProduct kernel as num=1, channels=1, height=K, width=C."""
    n = conv_net()
    model = NetParameter()
    model.ParseFromString(n.caffemodel())
    fc = next(la for la in model.layer if la.name == "fc")
    w = fc.blobs[0]
    rows, cols = (int(d) for d in w.shape.dim)
    w.ClearField("shape")
    w.num, w.channels, w.height, w.width = 1, 1, rows, cols
    net = parse(n.prototxt(), model.SerializeToString())
    np.testing.assert_array_equal(net.layer("fc").weights["kernel"], n.blobs["fc"][1][0])


def test_missing_files():
    with pytest.raises(ParserError, match="cannot read prototxt"):
        parse("/nonexistent/model.prototxt")
    with pytest.raises(ParserError, match="cannot read caffemodel"):
        parse(conv_net().prototxt(), "/nonexistent/model.caffemodel")

"""Data movement between INT8 layers without a round trip through float, whole lowered networks
(quantize, the INT8 tile kernels, pooling, the maps) run on the CPU through the CUDA emulator
(``emu_lowered.run_lowered``) bit for bit against the reference backend.

A channel concatenation of int8 results read by an INT8 layer (DenseNet's blocks) lowers to one
int8 -> int8 launch (the gather of ``lowering/int8_gather.py``) instead of dequantize, float copy and
quantize: its bytes equal those of the float lowering it replaces and a numpy model of the
reference's steps, for float32 and float16 concatenations, nested ones included, with readers
whose scales saturate. A flatten of a pooled int8 tensor is an alias (``lower_int8_move``).
"""

from __future__ import annotations

import int8_nets as nets
import numpy as np
import pytest
from cuda_emu import compiler
from emu_lowered import run_lowered

from backends import reference
from backends.gpu.lower import lower
from backends.gpu.lowering import int8_gather
from engine.ir import int8_annotation as annotation
from engine.ir.dtypes import Precision
from engine.ir.int8_math import quantize

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")


def _equal_bits(got: np.ndarray, want: np.ndarray, name: str) -> None:
    assert got.shape == want.shape and np.abs(want).max() > 0, (name, got.shape, want.shape)
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{name}: {bad.size} of {got.size} differ"


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16])
def test_int8_concat_is_one_launch_with_the_float_lowerings_bytes(rng, tmp_path, monkeypatch, precision):
    net, feeds = nets.dense_net(rng, precision)
    new = lower(net, net.layers, list(net.outputs))
    with monkeypatch.context() as m:
        m.setattr(int8_gather, "int8_gather", lambda lw, tensor, scale: None)
        old = lower(net, net.layers, list(net.outputs))
    labels = [op.label for op in new.ops]
    assert labels.count("gather8_cat1") == labels.count("gather8_cat2") == 1
    assert not any(lb.startswith(("dequant_", "quant_cat")) or lb in ("cat1", "cat2") for lb in labels), labels
    # 3 dequantize, 2 float copies and 2 quantize launches become the 2 int8 concatenations
    assert len(new.ops) == len(old.ops) - 5, [op.label for op in old.ops]

    got_new, got_old = {}, {}
    out_new = run_lowered(new, feeds, tmp_path / "new", got_new)
    out_old = run_lowered(old, feeds, tmp_path / "old", got_old)
    want = reference.execute(net, feeds)["c3"]
    _equal_bits(out_new["c3"], want, "c3")
    _equal_bits(out_old["c3"], want, "c3 (float lowering)")

    def floats(t: str) -> np.ndarray:  # an int8 result as the float lowering stores it, NCHW
        c, s = net.tensors[t].shape[1], np.float32(annotation.read(net.producer(t)).output_scale)
        v = (got_new[f"{t}@q8"][..., :c].astype(np.float32) * s).transpose(0, 3, 1, 2)
        return v.astype(np.float16 if precision is Precision.FP16 else np.float32)

    cat_dtype = np.float16 if precision is Precision.FP16 else np.float32
    cat1 = np.concatenate([floats("c0"), floats("c1")], axis=1).astype(cat_dtype)
    cat2 = np.concatenate([cat1, floats("c2")], axis=1).astype(cat_dtype)
    for reader, cat in (("c2", cat1), ("c3", cat2)):
        layer = next(la for la in net.layers if la.name == reader)
        q_new = got_new[next(op for op in new.ops if op.label == reader).reads[0]]
        q_old = got_old[next(op for op in old.ops if op.label == reader).reads[0]]
        q_want = quantize(cat.astype(np.float32), np.float32(annotation.read(layer).input_scales[0]))
        c = cat.shape[1]
        assert (q_want == 127).any() and (q_want == -128).any(), "the range's ends are not exercised"
        np.testing.assert_array_equal(q_new[..., :c], q_want.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(q_new, q_old)  # the padding channels' zeros included


@pytest.mark.parametrize("fc_scale,flat_out", [(1.0, False), (1.0, True), (1.5, False)])
def test_int8_classifier_tail_emulated_equals_the_reference(rng, tmp_path, fc_scale, flat_out):
    """conv -> global pooling -> flatten -> FC with the FC reading the pooled bytes through the
    alias (at another scale through float; the flattened tensor also an output: dequantized)."""
    net, feeds = nets.classifier_net(rng, fc_scale=fc_scale, flat_out=flat_out)
    low = lower(net, net.layers, list(net.outputs))
    got = run_lowered(low, feeds, tmp_path)
    ref = reference.execute(net, feeds)
    for name in net.outputs:
        _equal_bits(got[name].reshape(ref[name].shape), ref[name], name)

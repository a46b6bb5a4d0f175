"""Limits: every violated limit is reported with its name and value; config feature flags."""

import pytest

from dla_sim import limits
from dla_sim.config import get_config
from dla_sim.limits import LIMITS, DlaLimitError
from dla_sim.ops import CdpOp, ConvOp, CubeDesc, PdpOp, Precision, SdpOp

NV_FULL, NV_SMALL = get_config("nv_full"), get_config("nv_small")


def _conv(**kw):
    base = dict(name="c", input=CubeDesc(c=64, h=56, w=56), output=CubeDesc(c=64, h=56, w=56), kernel=(3, 3),
                pad=(1, 1, 1, 1))
    base.update(kw)
    return ConvOp(**base)


def test_valid_conv_has_no_reasons():
    assert limits.check(_conv(), NV_FULL) == []
    limits.require_within_limits(_conv(), NV_FULL)


def test_every_conv_violation_is_reported():
    op = _conv(kernel=(33, 33), stride=(9, 1), pad=(32, 0, 0, 40), dilation=(1, 33),
               input=CubeDesc(n=33, c=9000, h=56, w=56), output=CubeDesc(n=33, c=64, h=56, w=8193), groups=7)
    reasons = limits.check(op, NV_FULL)
    text = "\n".join(reasons)
    for want in ("conv kernel 33×33 exceeds 32 (conv kernel ext field, 5 bits",
                 "conv stride 9×1 exceeds 8", "conv dilation 1×33 exceeds 32",
                 "conv padding top=32 exceeds 31", "conv padding right=40 exceeds 31",
                 "cube dimension input C=9000 exceeds 8192", "cube dimension output W=8193 exceeds 8192",
                 "batch input N=33 exceeds 32", "conv groups 7 must divide"):
        assert want in text, want
    with pytest.raises(DlaLimitError) as e:
        limits.require_within_limits(op, NV_FULL)
    assert all(r in str(e.value) for r in reasons)
    assert isinstance(e.value, ValueError)


def test_padding_must_be_less_than_kernel():
    r = limits.check(_conv(kernel=(3, 1), pad=(3, 0, 0, 1)), NV_FULL)
    assert any("top/bottom 3/0 must be < kernel height 3" in x for x in r)
    assert any("left/right 0/1 must be < kernel width 1" in x for x in r)


def test_config_feature_flags():
    wino = _conv(mode="winograd")
    assert limits.check(wino, NV_FULL) == []
    assert any("Winograd not available on nv_small" in r for r in limits.check(wino, NV_SMALL))
    r = limits.check(_conv(mode="winograd", kernel=(5, 5), pad=(0, 0, 0, 0), output=CubeDesc(c=64, h=54, w=6)),
                     NV_FULL)
    assert any("3×3 kernel" in x for x in r) and any("width 6 must be >= 8" in x for x in r)
    assert any("height 54 must be >= 8 and divisible by 4" in x for x in r)
    batch2 = _conv(input=CubeDesc(n=2, c=64, h=56, w=56))
    assert any("batch 2 exceeds 1 on nv_small" in x for x in limits.check(batch2, NV_SMALL))
    sdp = SdpOp(name="s", input=CubeDesc(c=8, h=2, w=2, precision=Precision.FP16),
                output=CubeDesc(c=8, h=2, w=2, precision=Precision.FP16), activation="tanh", eltwise="add")
    r = limits.check(sdp, NV_SMALL)
    assert any("element-wise not available" in x for x in r) and any("LUT (tanh)" in x for x in r)
    sp = _conv(sparse_2_4=True, input=CubeDesc(c=64, h=56, w=56))
    r = limits.check(sp, NV_FULL)
    assert any("sparsity not available on nv_full" in x for x in r) and any("needs C > 64" in x for x in r)


def test_pdp_cdp_sdp_limits():
    cube = CubeDesc(c=8, h=30, w=30)
    pd = PdpOp(name="p", input=cube, output=cube, kernel=(9, 2), stride=(1, 17), pad=(8, 0, 0, 0))
    r = "\n".join(limits.check(pd, NV_FULL))
    assert "pooling window 9×2 exceeds 8" in r and "pooling stride 1×17 exceeds 16" in r
    assert "pooling padding top=8 exceeds 7" in r
    assert limits.check(CdpOp(name="l", input=cube, output=cube, local_size=11), NV_FULL) == [
        "LRN window 11 not in {3, 5, 7, 9} (CDP normalz_len field [IAS])"
    ]
    sd = SdpOp(name="s", input=cube, output=cube, bias_shift=64, scale_shift=256)
    r = "\n".join(limits.check(sd, NV_FULL))
    assert "bias_shift 64 exceeds 63" in r and "scale_shift 256 exceeds 255" in r


def test_limit_table_is_data_with_sources():
    for name, lim in LIMITS.items():
        assert lim.name == name and lim.source
        assert lim.allowed is not None or lim.lo is not None or lim.hi is not None
    assert (LIMITS["conv.stride"].lo, LIMITS["conv.stride"].hi) == (1, 8)
    assert (LIMITS["conv.pad"].lo, LIMITS["conv.pad"].hi) == (0, 31)
    assert (LIMITS["pdp.stride"].lo, LIMITS["pdp.stride"].hi) == (1, 16)
    assert LIMITS["cdp.local_size"].allowed == (3, 5, 7, 9)


def test_check_answers_are_kept_per_frozen_op_and_config():
    import dataclasses
    import gc

    from dla_sim import limits
    from dla_sim.config import get_config
    from dla_sim.ops import CubeDesc, PdpOp

    cfg = get_config("nv_full")
    cube = CubeDesc(c=8, h=8, w=8)
    bad = PdpOp(name="p", input=cube, output=CubeDesc(c=8, h=1, w=1), mode="max", kernel=(9, 9))
    first = limits.check(bad, cfg)
    assert first and limits.check(bad, cfg) == first
    first.append("caller's own list")  # callers get copies
    assert "caller's own list" not in limits.check(bad, cfg)
    ok = dataclasses.replace(bad, kernel=(8, 8))
    assert limits.check(ok, cfg) == []  # an equal-looking op with other fields is its own entry
    key = (id(bad), id(cfg))
    assert key in limits._memo
    del bad, first
    gc.collect()
    assert key not in limits._memo

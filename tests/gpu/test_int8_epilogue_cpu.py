"""The GPU INT8 epilogue's 32-bit rewrite equals the reference's int64 steps (no CUDA needed).

``int8.device_params`` turns the reference's per-channel integers into the kernel's parameters,
and ``int8_epi_src`` computes with them in 32-bit operations: on the general path saturating adds,
a magnitude clamp, one 32 x 32 + 64-bit multiply-add and a funnel shift; on the fast path plain
adds and the high word of one signed multiply-add. ``_kernel_model`` below repeats those
operations instruction by instruction in numpy (unsigned wrap-around included), so this test fails
if the rewrite is not exact for some input: random sums over the whole int32 range, sums next to
every rounding tie and saturation point, biases up to the +-2**33 clamp, requant and residual
shifts from 0 to 63 (general path) or 16 to 32 (fast path), with and without ReLU. The GPU tests
(test_int8.py) then check the kernel against the reference bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.gpu.kernels.int8 import Epilogue8, device_params
from backends.reference.int8 import _sat, convert
from engine.ir.int8_math import requant_params

M32 = (1 << 32) - 1



def _i32(x: np.ndarray) -> np.ndarray:
    """Wrap to int32 the way the GPU's 32-bit registers do."""
    return ((np.asarray(x, np.int64) + 2**31) & M32) - 2**31


def _sat32(x: np.ndarray) -> np.ndarray:
    """add.sat.s32's clamp."""
    return np.clip(x, -(2**31), 2**31 - 1)


def _u32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.int64) & M32


def _kernel_model(ep: np.ndarray, sat: bool, relu: bool, clipq: int, acc: np.ndarray,
                  res: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """int8_epi_src's sum4 + requant4, one numpy line per instruction; acc, res: (rows, K); ``sat``:
    the general path. Returns the int32 sum before the activation and the int8 result."""
    p = ep.astype(np.int64)  # int32 bit patterns, sign-extended
    k = acc.shape[1]
    b1, b2 = p[0, :k], p[1, :k]
    T, osc = _u32(p[2, :k]), _u32(p[3, :k])
    pairs = p[4:6].reshape(-1, 2)  # channel n's 64-bit half at u64 index n of rows 4-5
    hlo, hhi = _u32(pairs[:k, 0]), _u32(pairs[:k, 1])
    s1, s2 = p[6, :k], p[7, :k]
    a = acc.astype(np.int64)
    t = _sat32(_sat32(a + b1) + b2) if sat else _i32(a + b1)
    if res is not None:
        rsc, rh, rsh = p[8, :k], p[9, :k], p[10, :k]
        r = res.astype(np.int64)
        c = _i32(_i32(r * rsc) + rh + np.where(r < 0, -1, 0)) >> rsh
        t = _sat32(t + c) if sat else _i32(t + c)
    total = t.copy()
    if not sat:  # requant_hi: the high word of v * B + 2**31 (- 1 where v < 0), int64 arithmetic shift
        big = p[11, :k]
        v = np.maximum(t, 0) if relu else t
        r = (v * big + 2**31 + np.where(v < 0, -1, 0)) >> 32
        q = np.minimum(r, clipq) if relu else np.minimum(np.maximum(r, -128), clipq)
        return total, q
    if relu:
        mag = np.minimum(_u32(np.maximum(t, 0)), T)
        s = np.zeros_like(t)
    else:
        s = np.where(t < 0, -1, 0)
        mag = np.minimum(_u32((_u32(t) ^ _u32(s)) - _u32(s)), T)
    prod = (mag.astype(object) * osc.astype(object) + ((hhi.astype(object) << 32) | hlo.astype(object)))
    prod = np.vectorize(lambda v: v & ((1 << 64) - 1), otypes=[object])(prod)
    r = np.vectorize(lambda v, n: (v >> min(int(n), 32)) & M32, otypes=[object])(prod, s1).astype(np.int64)
    r = r >> s2
    if relu:
        q = np.minimum(r, clipq)
    else:
        r = np.minimum(r, 127 - s)
        q = np.minimum((r ^ s) - s, clipq)
    return total, q


def _reference(e: Epilogue8, acc: np.ndarray, res: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """backends.reference.int8.epilogue's integer steps: the sum before the activation, the result."""
    v = _sat(acc.astype(np.int64), 32)
    if e.bias is not None:
        v = _sat(v + e.bias, 32)
    if res is not None:
        v = _sat(v + convert(res, e.rsc.astype(np.int64), e.rsh.astype(np.int64), 32), 32)
    total = v.copy()
    if e.relu:
        v = np.maximum(v, 0)
    q = convert(v, e.osc.astype(np.int64), e.osh.astype(np.int64), 8)
    return total, np.minimum(q, e.clipq)


def _assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], want[0], err_msg="int32 sum before the activation")
    np.testing.assert_array_equal(got[1], want[1], err_msg="int8 result")


def _multipliers(rng: np.random.Generator, k: int) -> np.ndarray:
    """Requant multipliers spanning every shift 0..63 (2**14 down to below 2**-48)."""
    m = np.exp2(rng.uniform(-50, 14, k))
    m[: min(k, 6)] = [2.0**14, 1.0, 0.5, 2.0**-18, 2.0**-17.5, 1e-17][: min(k, 6)]
    return m


def _epilogue(rng: np.random.Generator, k: int, relu: bool, residual: bool, bias_bits: int,
              acc_bound: np.ndarray | None) -> Epilogue8:
    osc, osh = requant_params(_multipliers(rng, k))
    rsc = rsh = None
    if residual:
        rsc, rsh = requant_params(np.roll(_multipliers(rng, k), 3))
    bias = rng.integers(-(2**bias_bits), 2**bias_bits, k, dtype=np.int64)
    if bias_bits >= 33:
        bias[:4] = [2**33, -(2**33), 2**32 - 1, -(2**32)]
    clipq = int(rng.integers(0, 128)) if relu and rng.random() < 0.5 else 127
    return Epilogue8(k, bias, rsc, rsh, osc.astype(np.int32), osh.astype(np.int32), None, relu, clipq, None,
                     acc_bound)


def _sums(rng: np.random.Generator, e: Epilogue8, rows: int, bound: int) -> np.ndarray:
    """Random int32 sums within +-bound, plus, per channel, the sums next to rounding ties and the
    saturation points of its requant (found by inverting the multiplier)."""
    acc = rng.integers(-bound, bound + 1, (rows, e.k), dtype=np.int64)
    b = 0 if e.bias is None else e.bias
    for j, step in enumerate((-129.5, -128.5, -127.5, -0.5, 0.5, 1.5, 126.5, 127.5, 128.5)):
        x = np.floor(step * np.exp2(e.osh.astype(np.float64)) / e.osc) - b
        for d in (-1, 0, 1):
            acc[(3 * j + d + 1) % rows] = np.clip(x + d, -bound, bound)
    return acc


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_saturating_path_equals_reference(rng, relu, residual):
    k, rows = 64, 400
    e = _epilogue(rng, k, relu, residual, 33, None)
    ep, sat = device_params(e)
    assert sat and ep.dtype == np.int32 and ep.shape[1] == 64
    acc = _sums(rng, e, rows, 2**31 - 1)
    res = rng.integers(-128, 128, (rows, k), dtype=np.int64) if residual else None
    if residual:
        res[0], res[1] = -128, 127
    _assert_same(_kernel_model(ep, sat, relu, e.clipq, acc, res), _reference(e, acc, res))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_plain_add_path_equals_reference(rng, relu, residual):
    """Sums that cannot leave int32 (the bound the host proves from the weights) take plain adds."""
    k, rows = 48, 400
    bound = 2**26
    e = _epilogue(rng, k, relu, residual, 20, np.full(k, bound, np.int64))
    ep, sat = device_params(e)
    assert sat  # shifts over 32 and under 16: the general requant, here with plain-add bounds
    acc = _sums(rng, e, rows, bound)
    res = rng.integers(-128, 128, (rows, k), dtype=np.int64) if residual else None
    _assert_same(_kernel_model(ep, sat, relu, e.clipq, acc, res), _reference(e, acc, res))


def _fast_multipliers(rng: np.random.Generator, k: int) -> np.ndarray:
    """Multipliers whose requant takes the fast path (shifts 16..32), with both ends."""
    m = np.exp2(rng.uniform(-18, -1, k))
    m[:4] = [0.4999, 2.0**-18, 2.0**-17.5, 0.25]
    return m


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_fast_path_equals_reference(rng, relu, residual):
    """Plain adds and the one multiply-add requant: random sums, sums next to every tie and
    saturation point, residuals at both ends, converter shifts 0..63 (a 0 scale too)."""
    k, rows = 64, 600
    bound = 2**26
    osc, osh = requant_params(_fast_multipliers(rng, k))
    rsc = rsh = None
    if residual:
        rsc, rsh = requant_params(np.roll(_multipliers(rng, k), 5))
        rsc[7] = 0
    clipq = int(rng.integers(-20, 128)) if rng.random() < 0.5 else 127
    e = Epilogue8(k, rng.integers(-(2**20), 2**20, k, dtype=np.int64), rsc, rsh, osc.astype(np.int32),
                  osh.astype(np.int32), None, relu, clipq, None, np.full(k, bound, np.int64))
    ep, general = device_params(e)
    assert not general and osh.min() >= 16 and osh.max() <= 32
    acc = _sums(rng, e, rows, bound)
    res = rng.integers(-128, 128, (rows, k), dtype=np.int64) if residual else None
    if residual:
        res[0], res[1] = -128, 127
    _assert_same(_kernel_model(ep, False, relu, e.clipq, acc, res), _reference(e, acc, res))


def test_fast_requant_range():
    """The fast requant takes a layer only where every channel's B = osc * 2**(32 - osh) < 2**31
    with 1 <= osh <= 32; one channel outside sends the whole layer to the general path."""
    from backends.gpu.kernels.int8 import fast_requant_multipliers

    osc, osh = requant_params(np.array([0.4999, 2.0**-18, 1e-3]))
    big = fast_requant_multipliers(osc, osh)
    assert big is not None and big.max() < 2**31 and (big >> (32 - osh) == osc).all()
    for m in (0.5, 0.75, 2.0**-18.5, 1.0):
        osc, osh = requant_params(np.array([1e-3, m]))
        assert fast_requant_multipliers(osc, osh) is None, m
    assert fast_requant_multipliers(np.array([0, 20000]), np.array([0, 20])) is not None  # a padded channel


def test_negative_converter_scale_is_refused(rng):
    e = _epilogue(rng, 8, True, True, 16, None)
    e.rsc = e.rsc.copy()
    e.rsc[2] = -3
    with pytest.raises(ValueError, match="converter scales"):
        device_params(e)


def test_padded_channels_output_zero(rng):
    e = _epilogue(rng, 20, False, True, 16, None)
    ep, _ = device_params(e)
    assert ep.shape == (12, 32)
    rows = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11]
    assert not ep[rows, 20:].any() and not ep[4:6].reshape(-1, 2)[20:].any()


def test_saturation_needs_a_bound():
    """Without a bound on |acc| (or when bias and residual could push a sum past int32) the adds saturate."""
    k = 4
    osc, osh = requant_params(np.full(k, 1e-3))
    e = Epilogue8(k, np.full(k, 2**30, np.int64), None, None, osc.astype(np.int32), osh.astype(np.int32), None,
                  True, 127, None, np.full(k, 2**30, np.int64))
    assert device_params(e)[1]
    e.bias = np.full(k, 2**29, np.int64)
    assert not device_params(e)[1]


def test_requant_fits_32_bits_exactly_up_to_shift_24() -> None:
    """The fact a 32-bit requant would rest on: with |v| clamped to its saturation point T, the
    multiply-add |v| * osc + 2**(osh - 1) stays below 2**32 for every requant scale whose shift is
    at most 24 (a scale ratio s_acc / s_out of at least about 9.8e-4), and for no larger shift.
    Checked over the whole range ``requant_params`` produces."""
    from backends.gpu.kernels.int8 import _requant_clamp

    ratios = np.geomspace(1e-7, 2.0, 6000)
    osc, osh = (np.asarray(a, np.int64) for a in requant_params(ratios))
    t = _requant_clamp(osc, osh)
    half = np.where(osh > 0, np.left_shift(np.int64(1), np.maximum(osh - 1, 0)), 0)
    fits = t * osc + half < 2**32
    assert fits[osh <= 24].all() and not fits[osh > 24].any()
    assert 9.7e-4 < ratios[osh <= 24].min() < 9.9e-4

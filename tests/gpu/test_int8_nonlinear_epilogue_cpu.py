"""The GPU INT8 SiLU / hard-swish epilogue (``int8_epi_src.store_nl4``, the text both INT8
convolution kernels use) run on the CPU through the CUDA emulator, bit for bit against the
reference's definition (``engine.ir.int8_rules.quantize_nonlinear``).

The int32 values go straight into the epilogue, so the test picks them: random values over the
whole int32 range, values whose quotient ``f(v * s_acc) / s_out`` is exactly a rounding tie (hard-swish,
whose float64 steps are IEEE operations only) or within 1e-4 of one (SiLU: its exp may differ
from numpy's in the last bit, which can only move an exact tie), and values far past both int8
saturation points. Int8 and float32 outputs (a layer without an output scale), padded channels zero.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from cuda_emu import EmulatedModule, compiler

from backends.gpu.kernels.int8 import NONLINEAR_FLAGS, cp16
from backends.gpu.kernels.int8_epi_src import EPI8_SRC
from engine.ir.int8_rules import activation_value, quantize_nonlinear
from engine.ir.layers import ActivationType

pytestmark = pytest.mark.skipif(compiler() is None, reason="no host C++ compiler for the CUDA emulator")

# One thread per 4 channels of a row: the int32 values of row m (K of them) through store_nl4.
HARNESS = r"""
typedef unsigned int u32;
""" + EPI8_SRC + r"""
extern "C" __global__ void __launch_bounds__(256) nl_rows(const int* __restrict__ v, const double* __restrict__ sacc,
    int M, int K, int flags, double sout, void* __restrict__ y, int ldy) {
  const int G = (ldy + 3) / 4;
  const int id = blockIdx.x * blockDim.x + threadIdx.x;
  if (id >= M * G) return;
  const int m = id / G, n = (id - m * G) * 4;
  int a[4];
  for (int j = 0; j < 4; ++j) a[j] = n + j < K ? v[(size_t)m * K + n + j] : 0;
  Nl4 p;
  load_nl4(p, sacc, n, K, sout);
  store_nl4(a, m, n, K, p, flags, sout, y, ldy);
}
"""

KINDS = {"silu": ActivationType.SILU, "hard_swish": ActivationType.HARD_SWISH}


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> EmulatedModule:
    return EmulatedModule(HARNESS, tmp_path_factory.mktemp("emu_nl8"))


def _run(emu: EmulatedModule, kind: str, v: np.ndarray, s_acc: np.ndarray, s_out: float | None) -> np.ndarray:
    """The emulated epilogue on ``v`` (M, K): int8 (M, Kp16) or float32 (M, round_up(K, 4) + 4)."""
    m, k = v.shape
    if s_out is None:
        ldy = -(-k // 4) * 4 + 4
        y = np.full((m, ldy), np.nan, np.float32)
    else:
        ldy = cp16(k)
        y = np.full((m, ldy), 0x5A, np.int8)  # padded channels must be overwritten with 0
    args = [np.ascontiguousarray(v, np.int32), np.ascontiguousarray(s_acc, np.float64), np.array([m], np.int32),
            np.array([k], np.int32), np.array([NONLINEAR_FLAGS[kind] | 2], np.int32),
            np.array([0.0 if s_out is None else s_out], np.float64), y, np.array([ldy], np.int32)]
    emu.launch("nl_rows", m * (ldy // 4), args)
    return y


def _check(emu: EmulatedModule, kind: str, v: np.ndarray, s_acc: np.ndarray, s_out: float | None) -> np.ndarray:
    y = _run(emu, kind, v, s_acc, s_out)
    k = v.shape[1]
    want = quantize_nonlinear(KINDS[kind], v.astype(np.int64), s_acc[None, :], s_out)
    if s_out is None:
        np.testing.assert_array_equal(y[:, :k].view(np.uint32), want.view(np.uint32))
    else:
        np.testing.assert_array_equal(y[:, :k].astype(np.int64), want)
    assert not np.any(y[:, k:]), "padded output channels must be zero"
    return want


def _scales(rng: np.random.Generator, k: int, s_out: float) -> np.ndarray:
    """Per-channel accumulator scales putting ~ +-2**12 of the int32 range in int8's."""
    return s_out * np.exp2(rng.uniform(-12.0, -6.0, k))


@pytest.mark.parametrize("kind", ["silu", "hard_swish"])
@pytest.mark.parametrize("float_out", [False, True])
def test_random_values_over_int32(emu, kind, float_out):
    rng = np.random.default_rng([len(kind), int(float_out)])
    k, s_out = 21, float(np.float32(0.037))
    s_acc = _scales(rng, k, s_out)
    v = np.concatenate([rng.integers(-(2**31), 2**31, (8, k)),  # mostly saturated or -0
                        rng.integers(-(2**13), 2**13, (40, k)),  # the int8 range and its edges
                        rng.integers(-(2**9), 2**9, (16, k))]).astype(np.int32)
    v[0, :4] = [-(2**31), 2**31 - 1, 0, -1]
    want = _check(emu, kind, v, s_acc, None if float_out else s_out)
    if not float_out:
        assert want.max() == 127 and len(np.unique(want)) > 60
        assert want.min() < -2  # the negative lobe
    else:
        assert np.count_nonzero(want) > want.size // 2


def test_saturation_at_both_ends(emu):
    """A tiny output scale: SiLU's minimum (-0.278) lies past -128 steps, large values past 127."""
    rng = np.random.default_rng(5)
    k, s_out = 12, 1e-3
    s_acc = np.full(k, 2.0**-10) * rng.uniform(0.5, 2.0, k)
    v = rng.integers(-(2**14), 2**14, (64, k)).astype(np.int32)
    for kind in ("silu", "hard_swish"):
        want = _check(emu, kind, v, s_acc, s_out)
        assert want.min() == -128 and want.max() == 127


def _tie_values(kind: str, s_acc: float, s_out: float, lo: int, hi: int, near: float) -> np.ndarray:
    """The v in [lo, hi) whose reference quotient f(v * s_acc) / s_out is within ``near`` of k + 0.5."""
    v = np.arange(lo, hi, dtype=np.int64)
    t = activation_value(KINDS[kind], v.astype(np.float64) * s_acc) / s_out
    return v[np.abs(t - np.floor(t) - 0.5) <= near]


def test_hard_swish_exact_ties_round_half_even(emu):
    """Quotients exactly k + 0.5 (both the linear part x >= 3 and the quadratic part) round to even."""
    s_acc, s_out = 2.0**-7, 2.0**-4  # x = v / 128 (3 at v = 384), f(x) / s_out = v / 8 for x >= 3
    ties = _tie_values("hard_swish", s_acc, s_out, -400, 1100, 0.0)
    assert len(ties) > 80 and np.any(ties < 384) and np.any(ties >= 384)  # x < 3 and x >= 3
    v = ties.astype(np.int32).reshape(-1, 1)
    want = _check(emu, "hard_swish", v, np.array([s_acc]), s_out)
    assert np.all(want[want < 127] % 2 == 0)  # every tie went to the even neighbour
    assert want.max() == 127  # and the saturation point is among them


def test_silu_values_next_to_ties(emu):
    rng = np.random.default_rng(11)
    s_out = 0.021
    got = []
    for s_acc in s_out * np.exp2(rng.uniform(-11.0, -7.0, 6)):
        vals = _tie_values("silu", float(s_acc), s_out, -(2**14), 2**16, 1e-4)
        got.append((s_acc, vals))
    assert sum(len(v) for _, v in got) > 20
    for s_acc, vals in got:
        if len(vals):
            _check(emu, "silu", vals.astype(np.int32).reshape(-1, 1), np.array([s_acc]), s_out)


@pytest.mark.parametrize(("s_acc", "s_out", "lo", "hi"), [
    (1.7e-5, 2e-3, -(2**19) - 2**18, -(2**16)),  # x in [-13.4, -1.1]: exp's error reaches the quotient
    (9.1e-6, 0.05, 2**16, 2**20),  # x in [0.6, 9.5]: there x's rounding dominates
])
def test_silu_fast_path_holds_at_the_intrinsics_worst_error(emu, s_acc, s_out, lo, hi):
    """Values whose quotient lies within 2e-4 of a tie, through the emulated epilogue, whose exp and
    division carry the intrinsics' documented worst error (``int8_epi_src.nl_exp`` / ``nl_div``):
    each must equal the reference, so the tie test's bound covers those errors and x's roundings."""
    vals = _tie_values("silu", s_acc, s_out, lo, hi, 2e-4)
    assert len(vals) > 100
    _check(emu, "silu", vals.astype(np.int32).reshape(-1, 1), np.array([s_acc]), s_out)


@pytest.mark.parametrize("kind", ["silu", "hard_swish"])
def test_arguments_beyond_80(emu, kind):
    """|x| >= 80: ties and near-ties of the linear part (SiLU's y is x there), saturation, the
    negative side rounding to 0, and a tiny output scale under which that side reaches -128."""
    s_acc = 2.0**-7  # x = v / 128: a tie of x / 1.0 at every v = 128 k + 64
    v = np.concatenate([np.arange(80 * 128, 128 * 128 + 200), -np.arange(80 * 128, 90 * 128),
                        [2**31 - 1, -(2**31)]]).astype(np.int32).reshape(-1, 1)
    for s_out in (1.0, 1.0 + 2.0**-20, 0.75, 7.3e-3):
        want = _check(emu, kind, v, np.array([s_acc]), s_out)
        assert want.max() == 127 and not np.any(want[v[:, 0] < 0])
    if kind == "silu":  # -80 e**-80 / 1e-35 is below -128
        assert _check(emu, kind, v, np.array([s_acc]), 1e-35).min() == -128
    rng = np.random.default_rng(13)
    v = rng.integers(-(2**31), 2**31, (64, 24)).astype(np.int32)
    for s_out in (0.05, 3.0, 40.0):
        _check(emu, kind, v, s_out * np.exp2(rng.uniform(-14.0, -2.0, 24)), s_out)


def test_saturated_and_large_sums_skip_float64(tmp_path):
    """With the float64 path replaced by a marker, sums with |x| >= 80 away from a tie, and quotients
    past either saturation point even at a tie, still come out right: they are decided without
    float64 (the cost of random or saturating data)."""
    fallback = "return (int)fmin(fmax(rint(DDIV(nl_value("
    assert fallback in HARNESS
    marked = EmulatedModule(HARNESS.replace(fallback, "return 99; return (int)fmin(fmax(rint(DDIV(nl_value("),
                            tmp_path)
    rng = np.random.default_rng(14)
    s_acc = np.exp2(rng.uniform(-12.0, -8.0, 16))
    v = (rng.choice([-1, 1], (48, 16)) * rng.integers(2**20, 2**24, (48, 16))).astype(np.int32)
    x = v * s_acc[None, :]
    assert np.all(np.abs(x) >= 80.01)
    for kind in ("silu", "hard_swish"):
        for s_out in (0.05, 1.3):
            t = x / s_out
            clear = np.abs(t - np.floor(t) - 0.5) > 1e-3
            got = _run(marked, kind, v, s_acc, s_out)[:, :16].astype(np.int64)
            want = quantize_nonlinear(KINDS[kind], v.astype(np.int64), s_acc[None, :], s_out)
            assert np.all(got[clear] != 99)
            np.testing.assert_array_equal(got[clear], want[clear])
    # hard-swish ties k + 0.5 past 127.5 (x = v / 128 in [8.6, 78]: t = v / 8) and SiLU's negative
    # lobe past -127.5 under a tiny output scale: every one saturates, none needs float64
    ties = np.arange(8 * 137 + 4, 10000, 8).astype(np.int32).reshape(-1, 1)
    got = _run(marked, "hard_swish", ties, np.array([2.0**-7]), 2.0**-4)[:, :1]
    assert np.all(got == 127)
    lobe = -np.arange(2**9, 2**12).astype(np.int32).reshape(-1, 1)  # x in [-4, -0.5]
    want = quantize_nonlinear(KINDS["silu"], lobe.astype(np.int64), np.array([[2.0**-9]]), 1e-3)
    got = _run(marked, "silu", lobe, np.array([2.0**-9]), 1e-3)[:, :1].astype(np.int64)
    sat = want == -128
    assert sat.sum() > 100 and np.all(got[sat] == -128)


def test_near_ties_need_the_float64_path(tmp_path):
    """The float32 fast path alone (its tie test forced true) rounds some near-tie quotients the
    other way, so the cases above do reach the float64 path and the fallback is what keeps them exact;
    random values far from ties agree either way."""
    decide = "if (0.5f - fabsf(t - r) > err || t - err > 126.5f || t + err < -127.5f)"
    assert decide in HARNESS
    fast_only = EmulatedModule(HARNESS.replace(decide, "if (true)"), tmp_path)
    rng = np.random.default_rng(12)
    s_out, wrong = 0.021, 0
    for kind, near in (("silu", 1e-4), ("hard_swish", 0.0)):
        for s_acc in s_out * np.exp2(rng.uniform(-11.0, -7.0, 4)):
            vals = _tie_values(kind, float(s_acc), s_out, -(2**14), 2**16, near)
            if len(vals):
                v = vals.astype(np.int32).reshape(-1, 1)
                got = _run(fast_only, kind, v, np.array([s_acc]), s_out)[:, :1].astype(np.int64)
                wrong += int(np.count_nonzero(got != quantize_nonlinear(KINDS[kind], v.astype(np.int64),
                                                                        np.array([[s_acc]]), s_out)))
    assert wrong > 0
    far = rng.integers(-(2**13), 2**13, (64, 21)).astype(np.int32)
    s_acc = _scales(rng, 21, s_out)
    want = quantize_nonlinear(KINDS["silu"], far.astype(np.int64), s_acc[None, :], s_out)
    t = activation_value(KINDS["silu"], far * s_acc[None, :]) / s_out
    clear = np.abs(t - np.floor(t) - 0.5) > 1e-3
    got = _run(fast_only, "silu", far, s_acc, s_out)[:, :21].astype(np.int64)
    np.testing.assert_array_equal(got[clear], want[clear])


@pytest.mark.slow  # nvcc takes ~35 s for every INT8 tile
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_sources_compile_for_sm90(tmp_path):
    """The epilogue's CUDA branch (__dmul_rn etc.) and the tensor-core kernel with it, every tile."""
    from backends.gpu.kernels.int8 import _NAMES
    from backends.gpu.kernels.int8_src import INT8_SRC

    conv = [n for n in _NAMES if n.startswith("conv_igemm_s8<")]
    assert conv
    params = "const i8*, const i8*, int*, " + ", ".join(["int"] * 17) + ", EPI_DECL"  # geometry, G, kps
    inst = "".join(f"template __global__ void {n}({params});\n" for n in conv)
    for name, text in (("nl8.cu", HARNESS), ("conv8.cu", INT8_SRC + inst)):
        src = tmp_path / name
        src.write_text(text)
        done = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(src), "-o", str(src.with_suffix(".o"))],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]

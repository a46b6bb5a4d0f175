"""Calibration cache determinism, round trip, refusal of foreign networks, corruption; bad data."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import batches, small_cnn

from engine.builder import Builder, BuilderConfig
from engine.ir.errors import BuildError
from engine.ir.logger import Logger, Severity
from engine.quantization import CalibrationCache, EntropyCalibrator, MinMaxCalibrator, network_fingerprint
from engine.quantization.cache import MAGIC

QUIET = Logger(Severity.ERROR)


def _build(net, **cfg):
    return Builder(QUIET).build(net, BuilderConfig(int8=True, **cfg))


def test_same_data_gives_byte_identical_cache_and_it_round_trips(tmp_path):
    net = small_cnn()
    c1, c2 = EntropyCalibrator(batches(0, 3)), EntropyCalibrator(batches(0, 3))
    _build(net, calibrator=c1)
    _build(small_cnn(), calibrator=c2)
    assert c1.cache_bytes == c2.cache_bytes
    text = c1.cache_bytes.decode()
    assert text.startswith(f"{MAGIC} v2 network=") and "calibrator=entropy" in text.splitlines()[0]
    assert text.splitlines()[-1].startswith("sha256=")
    names = [line.split(": ")[0] for line in text.splitlines()[1:-1]]
    assert names == sorted(names) and len(names) >= 4
    cache = CalibrationCache.from_bytes(c1.cache_bytes)
    assert cache.to_bytes() == c1.cache_bytes
    # a build from the cache file alone reproduces the same INT8 network
    path = tmp_path / "net.cache"
    path.write_bytes(c1.cache_bytes)
    a = _build(small_cnn(), calibrator=EntropyCalibrator(batches(0, 3)))
    b = _build(small_cnn(), calibration_cache=str(path))
    for la, lb in zip(a.network.layers, b.network.layers):
        assert la.precision == lb.precision
        for k in la.weights:
            np.testing.assert_array_equal(la.weights[k], lb.weights[k])
    # different data → different scales
    c3 = MinMaxCalibrator(batches(1, 3))
    _build(small_cnn(), calibrator=c3)
    assert c3.cache_bytes != c1.cache_bytes


def test_cache_of_another_network_is_refused(tmp_path):
    cal = MinMaxCalibrator(batches(0, 2))
    _build(small_cnn(seed=0), calibrator=cal)
    other = small_cnn(seed=0, batch=1)  # same layers, another input shape
    path = tmp_path / "c.cache"
    path.write_bytes(cal.cache_bytes)
    fp_cache = CalibrationCache.from_bytes(cal.cache_bytes).fingerprint
    with pytest.raises(BuildError, match="made for another network") as e:
        _build(other, calibration_cache=str(path))
    assert fp_cache[:16] in str(e.value) and network_fingerprint(other)[:16] not in fp_cache


def _reseal(text: str) -> str:
    """Recompute the checksum line after an edit of the body (as a careful forger would)."""
    import hashlib

    body = text[:text.rindex("sha256=")]
    return body + "sha256=" + hashlib.sha256(body.encode()).hexdigest() + "\n"


def _body_append(line: str):
    return lambda t: _reseal(t[:t.rindex("sha256=")] + line + "sha256=\n")


@pytest.mark.parametrize("mutate,msg", [
    (lambda t: t.replace(MAGIC, "other-cache", 1), "not a hetrt calibration cache"),
    (lambda t: t.replace(" v2 ", " v9 ", 1), "version v9"),
    (lambda t: t.replace(" v2 ", " v1 ", 1), "version v1; this hetrt reads v2"),
    (lambda t: t[:-1], "truncated"),
    (lambda t: t[:t.rindex("sha256=")], "unsealed"),
    (_body_append("broken line\n"), "expected 'tensor: <8 hex digits>'"),
    (_body_append("zz: 7fc00000\n"), "must be finite"),
    (_body_append("zz: xyzxyzxy\n"), "not hexadecimal"),
])
def test_corrupt_cache_errors(mutate, msg):
    cal = MinMaxCalibrator(batches(0, 1))
    _build(small_cnn(), calibrator=cal)
    with pytest.raises(BuildError, match=msg):
        CalibrationCache.from_bytes(mutate(cal.cache_bytes.decode()).encode())


def test_tampered_cache_is_refused(tmp_path):
    """Audit finding 8: one changed exponent digit in every scale, or one scale forged x10^6, was used
    silently; both are refused now (the checksum no longer matches)."""
    cal = MinMaxCalibrator(batches(0, 1))
    _build(small_cnn(), calibrator=cal)
    text = cal.cache_bytes.decode()
    lines = text.splitlines(keepends=True)
    exponent = "".join(ln[:-9] + format(int(ln[-9:-1], 16) ^ 0x00800000, "08x") + "\n" for ln in lines[1:-1])
    first = lines[1]
    name, value = first.rstrip("\n").rsplit(": ", 1)
    import struct

    forged = struct.pack(">f", struct.unpack(">f", bytes.fromhex(value))[0] * 1e6).hex()
    for bad in (lines[0] + exponent + lines[-1], text.replace(first, f"{name}: {forged}\n")):
        path = tmp_path / "tampered.cache"
        path.write_text(bad)
        with pytest.raises(BuildError, match="checksum does not match"):
            _build(small_cnn(), calibration_cache=str(path))


def test_missing_cache_file_and_no_data(tmp_path):
    with pytest.raises(BuildError, match="does not exist"):
        _build(small_cnn(), calibration_cache=str(tmp_path / "none.cache"))
    with pytest.raises(BuildError, match="INT8 needs ranges"):
        _build(small_cnn())


def _no_work(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("optimization started before the calibration data was checked")

    monkeypatch.setattr(Builder, "_optimize", fail)


@pytest.mark.parametrize("make,msg", [
    (lambda d: np.save(d / "a.npy", np.zeros((2, 3, 8, 7), np.float32)), "does not match the network input"),
    (lambda d: np.save(d / "a.npy", np.full((2, 3, 8, 8), np.nan, np.float32)), "NaN"),
    (lambda d: np.save(d / "a.npy", np.where(np.eye(8) > 0, np.inf, 0).astype(np.float32)[None, None]
                       .repeat(2, 0).repeat(3, 1)), "Inf"),
    (lambda d: np.save(d / "a.npy", np.zeros((2, 3, 8, 8), np.int32)), "floating point"),
    (lambda d: (d / "a.npy").write_bytes(b"not numpy"), "cannot be read"),
    (lambda d: None, "holds no .npy files"),
])
def test_bad_calibration_directory_fails_before_work(tmp_path, monkeypatch, make, msg):
    make(tmp_path)
    _no_work(monkeypatch)
    with pytest.raises(BuildError, match=msg):
        _build(small_cnn(), calibrator=EntropyCalibrator(str(tmp_path)))


def test_directory_stack_is_cut_into_batches(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(6, 3, 8, 8)).astype(np.float32))  # 3 batches of 2
    cal = MinMaxCalibrator(str(tmp_path))
    _build(small_cnn(), calibrator=cal)
    assert cal.num_batches == 3 and cal.get_batch_size() == 2


def test_bad_in_memory_batches(monkeypatch):
    _no_work(monkeypatch)
    with pytest.raises(BuildError, match="empty"):
        _build(small_cnn(), calibrator=EntropyCalibrator([]))
    with pytest.raises(BuildError, match="do not match the network"):
        _build(small_cnn(), calibrator=EntropyCalibrator([{"y": np.zeros((2, 3, 8, 8), np.float32)}]))

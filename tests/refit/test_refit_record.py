"""The plan's refit record: round trip, and crafted records rejected with PlanError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_plan import forge, small_contents, split  # noqa: E402

from engine import plan as P  # noqa: E402
from engine.ir.errors import PlanError  # noqa: E402


def _refittable() -> bytes:
    contents = small_contents()
    contents.refit = {"format": "onnx", "source": b"\x08\x07model", "input_shapes": {"x": (1, 2)}, "batch": 3,
                      "int8_scales": {"x": 0.5}}
    return P.serialize(contents)


def test_refit_record_round_trip():
    data = _refittable()
    back = P.deserialize(data)
    assert back.refit == {"format": "onnx", "source": b"\x08\x07model", "input_shapes": {"x": (1, 2)}, "batch": 3,
                          "int8_scales": {"x": 0.5}}
    assert P.serialize(back) == data
    assert "refit" not in split(P.serialize(small_contents()))[0]


@pytest.mark.parametrize("change,msg", [
    (lambda r: r.update(format="zip"), "unknown format 'zip'"),
    (lambda r: r.pop("batch"), "must be an object with format, source"),
    (lambda r: r.update(int8_scales={"x": -1.0}), "finite positive"),
    (lambda r: r.update(source=999), "blob index 999 out of range"),
    (lambda r: r.update(input_shapes={"x": [-1]}), "shape"),
    (lambda r: r.update(batch="two"), "'batch' must be int"),
])
def test_crafted_refit_records_fail_cleanly(change, msg):
    manifest, area = split(_refittable())
    change(manifest["refit"])
    with pytest.raises(PlanError, match=msg):
        P.deserialize(forge(manifest, area))


def test_writer_checks_the_record():
    contents = small_contents()
    contents.refit = {"format": "zip", "source": b""}
    with pytest.raises(PlanError, match="format in"):
        P.serialize(contents)

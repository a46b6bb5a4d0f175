"""``bench/gpu_int8_epilogue.py`` rewrites the INT8 epilogue's per-row arithmetic by text: the text
it replaces must be in both INT8 module sources (the mma.sync one and the sm_90a one), exactly once,
and its "as built" variant must be the source unchanged, or the probe would time something else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from gpu_int8_epilogue import MAINLOOP, RESIDUAL_LOAD, SUM_AND_REQUANT, VARIANTS, variant_source  # noqa: E402

from backends.gpu.kernels.int8 import INT8_WG_SRC  # noqa: E402
from backends.gpu.kernels.int8_src import INT8_SRC  # noqa: E402


@pytest.mark.parametrize("source", [INT8_SRC, INT8_WG_SRC], ids=["mma_sync", "wgmma"])
def test_probe_rewrites_the_epilogue_it_names(source) -> None:
    assert source.count(SUM_AND_REQUANT) == 1 and source.count(RESIDUAL_LOAD) == 1 and source.count(MAINLOOP) == 1
    assert variant_source(source, VARIANTS["as built"]) == source
    for label in ("no requant", "no epilogue", "no residual load", "no mainloop"):
        probe = variant_source(source, VARIANTS[label])
        assert probe != source and all(old not in probe for old, _ in VARIANTS[label]), label
    with pytest.raises(RuntimeError, match="epilogue text changed"):
        variant_source(source.replace(SUM_AND_REQUANT, "/* elsewhere */"), VARIANTS["no requant"])

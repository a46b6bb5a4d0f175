"""bench/gpu_kernel_trace.py's matching of traced kernels to the engine's launch labels, without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from gpu_kernel_trace import attach_labels  # noqa: E402


def _kernels(*names: str) -> list[dict]:
    return [{"kernel": n, "us": 1.0, "start_us": float(i)} for i, n in enumerate(names)]


def test_a_split_k_reduction_takes_the_label_of_its_convolution():
    ks = _kernels("conv_igemm_s8<64>", "splitk_epilogue_s8", "pool2d_s8", "k3_Flatten")
    assert attach_labels(ks, ["conv", "pool", "flatten"])
    assert [k["label"] for k in ks] == ["conv", "conv", "pool", "flatten"]


def test_kernels_that_do_not_match_the_launches_get_no_labels():
    ks = _kernels("nvjet_a", "nvjet_b", "pool2d")  # a library call that launched two kernels
    assert not attach_labels(ks, ["gemm", "pool"])
    assert all(k["label"] is None for k in ks)
    ks = _kernels("conv", "pool2d")
    assert not attach_labels(ks, ["conv", "pool", "flatten"])  # a launch without its kernel
    assert all(k["label"] is None for k in ks)

"""Parts of the GPU backend that run without CUDA: availability, import hygiene, arena planning."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from backends.gpu.arena import ALIGN, BufferUse, plan_offsets
from backends.gpu.availability import gpu_available


def test_availability_reports_a_reason():
    ok, why = gpu_available()
    assert isinstance(ok, bool) and why, "a reason is always given"


def test_modules_import_without_cupy():
    code = ("import sys; import backends.gpu, backends.gpu.graph, backends.gpu.arena, backends.gpu.layout, "
            "backends.gpu.activations, backends.gpu.kernels.conv, backends.gpu.kernels.direct, backends.gpu.backend, "
            "backends.gpu.lower, backends.gpu.tactics, backends.gpu.kernels.gen; "
            "assert 'cupy' not in sys.modules, 'cupy imported at module import time'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plan_offsets_never_overlaps_live_buffers():
    rng = np.random.default_rng(0)
    for _ in range(50):
        uses = []
        for i in range(int(rng.integers(1, 30))):
            a, b = sorted(int(v) for v in rng.integers(0, 20, 2))
            uses.append(BufferUse(f"t{i}", int(rng.integers(1, 10_000)), a, b))
        offsets, total = plan_offsets(uses)
        for u in uses:
            assert offsets[u.name] % ALIGN == 0
            assert offsets[u.name] + u.nbytes <= total
        for i, u in enumerate(uses):
            for v in uses[i + 1:]:
                if u.first <= v.last and v.first <= u.last:
                    ou, ov = offsets[u.name], offsets[v.name]
                    assert ou + u.nbytes <= ov or ov + v.nbytes <= ou, (u, v)


def test_plan_offsets_reuses_dead_space():
    uses = [BufferUse("a", 1000, 0, 1), BufferUse("b", 1000, 1, 2), BufferUse("c", 1000, 2, 3)]
    offsets, total = plan_offsets(uses)
    assert total == 2 * 1024  # a and c share bytes; b sits beside both
    assert offsets["a"] == offsets["c"]


def test_pack_conv_weights_layout():
    from backends.gpu.layout import pack_conv_weights

    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    p = pack_conv_weights(w)
    assert p.shape == (2, 2, 2, 8) and p.dtype == np.float16
    assert p[1, 0, 1, 2] == w[1, 2, 0, 1] and (p[..., 3:] == 0).all()


def test_each_segment_leaves_the_outputs_and_what_later_segments_read():
    """``segment_outputs``: a GPU segment, a host layer, a GPU segment; the first must leave what
    the host layer reads (b_y, also an output) and what the last segment reads (a_y)."""
    from backends.gpu.backend import segment_outputs
    from engine.ir.layers import ActivationParams, ActivationSpec, ActivationType
    from engine.ir.network import Layer

    def act(name: str, x: str) -> Layer:
        return Layer(name, ActivationParams(ActivationSpec(ActivationType.RELU)), [x], [f"{name}_y"])

    a, b, host, c = act("a", "x"), act("b", "a_y"), act("host", "b_y"), act("c", "a_y")
    segments = [(True, [a, b]), (False, [host]), (True, [c])]
    assert segment_outputs(segments, {"b_y", "c_y"}) == [["a_y", "b_y"], [], ["c_y"]]
    assert segment_outputs([(True, [a, b]), (True, [c])], ["host_y"]) == [["a_y"], []]

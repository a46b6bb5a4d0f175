"""Run a lowered GPU segment on the CPU: every launch in order through the CUDA emulator.

Generated kernels run from the segment's module; tensor-core convolution and FC launches run the
same launches ``conv2d`` would enqueue (``conv2d_launches``) from ``CONV_SRC``, direct grouped ones
``grouped_conv``'s (``grouped_conv_launch``) from ``GROUPED_SRC``; INT8 quantize, pooling and
tile convolutions ``int8``'s (``quantize_nchw``, ``pool2d_s8_launches``, ``conv2d_s8_launches``)
from ``INT8_SRC``. Slots start as fp16/fp32 NaNs or int8 0x5A (a value nothing wrote shows up in
the results), constants as uploaded; an alias is a view of its root's buffer. Outputs come back as
their tensors: NHWC slots transposed to NCHW without their padded channels, linear ones reshaped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cuda_emu import EmulatedModule

from backends.gpu.kernels import gen
from backends.gpu.kernels.conv import conv2d_launches
from backends.gpu.kernels.conv_src import CONV_SRC
from backends.gpu.kernels.grouped import grouped_conv_launch
from backends.gpu.kernels.grouped_src import GROUPED_SRC
from backends.gpu.kernels.int8_src import INT8_SRC


def run_lowered(low, feeds: dict[str, np.ndarray], tmp_path: Path,
                keep: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The outputs of ``low`` (a ``Lowered``) for ``feeds``, every launch run in the emulator;
    ``keep``, if given, receives every slot's buffer as it was left (padding included)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    mods: dict[str, EmulatedModule] = {}
    bufs = {name: feeds[name].astype(low.slots[name].dtype) for name in low.inputs}

    def buf(name: str) -> np.ndarray:
        if name not in bufs:
            s = low.slots[name]
            root = s.alias or name
            if root not in bufs:
                r = low.slots[root]
                fill = 0x5A if np.dtype(r.dtype).kind == "i" else np.nan
                bufs[root] = r.const.astype(r.dtype) if r.const is not None else np.full(r.phys_shape, fill, r.dtype)
            bufs[name] = bufs[root].reshape(s.phys_shape)
        return bufs[name]

    def conv_module(kernel: str, source: str = CONV_SRC) -> EmulatedModule:
        if kernel not in mods:
            mods[kernel] = EmulatedModule(source, tmp_path, name_expressions=[kernel], opt="-O1")
        return mods[kernel]

    for op in low.ops:
        if op.kind == "gen":
            if "gen" not in mods:
                mods["gen"] = EmulatedModule(low.source.replace(gen.GEN_PRELUDE[len(gen.COMMON_SRC):], "\n", 1),
                                             tmp_path)
            mods["gen"].run(op.kernel, op.grid, op.block, [buf(a) for a in op.args], op.smem)
            continue
        i = op.info
        if op.kind in ("conv8", "pool8", "quant8"):
            if "int8" not in mods:
                from backends.gpu.kernels.int8 import _NAMES

                mods["int8"] = EmulatedModule(INT8_SRC, tmp_path, name_expressions=_NAMES, opt="-O1")
            _run_int8(op, buf, mods["int8"])
            continue
        if op.kind == "conv_gdirect":
            launch = grouped_conv_launch(buf(i["x"]), buf(i["w"]), buf(i["b"]), buf(i["y"]), i["geom"], i["groups"],
                                         i["tactic"], i["act"], buf(i["res"]) if i["res"] else None)
            conv_module(launch.kernel, GROUPED_SRC).run(launch.kernel, launch.grid, launch.block, launch.args,
                                                        launch.shared_mem)
            continue
        assert op.kind == "conv", op.kind
        ws = np.full(max(op.workspace, 4) // 4, np.nan, np.float32)
        res = buf(i["res"]) if i["res"] else None
        for launch in conv2d_launches(buf(i["x"]), buf(i["w"]), buf(i["b"]), buf(i["y"]), i["geom"], i["tactic"],
                                      i["act"], res, ws):
            conv_module(launch.kernel).run(launch.kernel, launch.grid, launch.block, launch.args, launch.shared_mem)
    if keep is not None:
        keep.update(bufs)
    out = {}
    for t, s in low.outputs.items():
        slot = low.slots[s]
        a = buf(s)
        out[t] = a.transpose(0, 3, 1, 2)[:, :slot.shape[1]] if slot.layout == "nhwc" else a.reshape(slot.shape)
    return out


def _run_int8(op, buf, mod: EmulatedModule) -> None:
    """An INT8 op's launches, as ``backend`` enqueues them, in the emulated ``INT8_SRC`` module."""
    from backends.gpu.kernels import int8 as k8

    i = op.info
    if op.kind == "quant8":  # quantize_nchw launches by name: run that launch here
        real = k8._fn
        k8._fn = lambda name: lambda grid, block, args: mod.run(name, grid, block[0], args)
        try:
            k8.quantize_nchw(buf(i["x"]), buf(i["y"]), i["shape"], i["scale"], i["s2d"])
        finally:
            k8._fn = real
        return
    if op.kind == "pool8":
        launches = k8.pool2d_s8_launches(buf(i["x"]), buf(i["y"]), i["geom"], i["average"])
    else:
        ws = np.full(max(op.workspace, 4) // 4, -7, np.int32)
        launches = k8.conv2d_s8_launches(buf(i["x"]), buf(i["w"]), buf(i["y"]), i["geom"], i["tactic"],
                                         k8.DeviceEpilogue.upload(i["epi"], np), buf(i["res"]) if i["res"] else None,
                                         ws, i["ldy"])
    for la in launches:
        mod.run(la.kernel, la.grid, la.block, la.args, la.shared_mem)


def run_without(net, feeds: dict[str, np.ndarray], tmp_path: Path, monkeypatch, finder: str,
                label: str) -> dict[str, np.ndarray]:
    """The outputs of ``net`` lowered with the lowering step found by ``lowerer.<finder>`` turned
    off (it finds nothing), run in the emulator; the layer ``label`` must then have its own launch.
    The baseline a fused lowering's bits are compared with."""
    from backends.gpu.lower import lower
    from backends.gpu.lowering import lowerer

    with monkeypatch.context() as m:
        m.setattr(lowerer, finder, lambda lw, absorbed: {})
        low = lower(net, net.layers, list(net.outputs))
        assert label in [op.label for op in low.ops], (label, [op.label for op in low.ops])
        return run_lowered(low, feeds, tmp_path)

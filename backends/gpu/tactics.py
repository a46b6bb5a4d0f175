"""Build-time tactic selection for the tensor-core convolutions (FP16 and INT8), with a timing cache.

As TensorRT does it: every convolution of a GPU partition has several candidate kernels (tile
shapes x split-K, ``conv.candidate_tactics``, and whole-layer ones: cuBLAS, GEMV, the direct
grouped kernel); the builder times them on the actual GPU and the
winner's name goes into the plan (``PlanContents.tactics``, layer name -> tactic name), where the
runtime's lowering reads it. Timings are cached in a JSON file keyed by the layer signature (its
geometry and fused epilogue), the GPU model, the hetrt version and a digest of the kernel
sources, so a rebuild on the same GPU with the same kernels skips the timing. ``level`` (0-5, like
TensorRT's builder optimization level) bounds the search: 0 takes the heuristic untimed, 1-2 time
a short list around it, 3 and above time every candidate.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from backends.gpu.kernels.conv import ConvGeometry, ConvTactic, candidate_tactics, heuristic_tactic
from engine.ir.logger import Logger, Progress
from engine.ir.network import Network


def signature(g: ConvGeometry, act: tuple[int, float, float], residual: bool, groups: int | None = None) -> str:
    """The timing-cache key of one convolution (independent of its name and weights); a grouped
    convolution's ends with its group count, and with the true count where groups were merged
    (``groups``: 32 groups of 4 channels and 16 of 8 merge alike, but time differently on the
    direct grouped kernel)."""
    return (f"conv n{g.n} h{g.h} w{g.w} c{g.c} k{g.k} r{g.r} s{g.s} st{g.stride} pad{g.pad} "
            f"end{g.pad_end or g.pad} dil{g.dilation} act{act[0]} res{int(residual)}"
            + (f" g{g.groups}" if g.groups > 1 else "")
            + (f" of{groups}" if groups is not None and groups != g.groups else ""))


def gpu_name() -> str:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _hetrt_version() -> str:
    from engine.ir import __version__

    return __version__


@functools.cache
def _kernels_digest() -> str:
    """A digest of the tensor-core kernels' sources and tile lists: a timing taken with other
    kernels (an edited epilogue, a new tile) is not reused."""
    import hashlib

    from backends.gpu.kernels.conv import CONV_WG_SRC, TILES, TILES_WG
    from backends.gpu.kernels.grouped_src import GROUPED_SRC
    from backends.gpu.kernels.int8 import INT8_WG_SRC, TILES8, TILES8_WG
    from backends.gpu.kernels.int8_pw_src import PW8_SRC
    from backends.gpu.kernels.int8_stream import STREAM8_TILES
    from backends.gpu.kernels.int8_stream_src import STREAM8_BODY

    # the sm_90a sources contain the portable ones
    h = hashlib.sha256((CONV_WG_SRC + INT8_WG_SRC + GROUPED_SRC + PW8_SRC + STREAM8_BODY + repr(TILES + TILES_WG)
                        + repr(TILES8 + TILES8_WG + STREAM8_TILES)).encode())
    return h.hexdigest()[:12]


class TimingCache:
    """{key: {"tactic": name, "ms": time}} in a JSON file; keys carry GPU model and hetrt version."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                    self.entries = data["entries"]
            except (OSError, ValueError):
                self.entries = {}  # an unreadable cache is rebuilt, never fatal

    def key(self, sig: str) -> str:
        """The entry of ``sig`` timed here: GPU model, hetrt version, kernels, and whether the wgmma
        tiles and which cuDNN were among the candidates (a timing without them is not reused where
        they run, nor one with another cuDNN's algorithms)."""
        from backends.gpu.kernels import cudnn
        from backends.gpu.kernels.conv import wgmma_usable

        wg = " wgmma" if wgmma_usable() else ""
        dnn = f" cudnn {cudnn.version()}" if cudnn.available() else ""
        return f"{sig} | {gpu_name()} | hetrt {_hetrt_version()} | kernels {_kernels_digest()}{wg}{dnn}"

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps({"format": 1, "entries": self.entries}, indent=1, sort_keys=True))
        tmp.replace(self.path)


LIBRARY_SOURCES = ("cublas", "cublaslt", "cudnn")  # tactic sources besides hetrt's own kernels
MAX_SPLITS = 16  # split-K factors the kernels and heuristics use: 1..16


def compiled_tactic(name: Any) -> bool:
    """Whether ``name`` is the canonical name of a tactic of the compiled kernels: FP16
    ``igemm_…`` / ``wgmma_…`` with a tile of ``TILES`` / ``TILES_WG`` or INT8 ``s8igemm_…`` /
    ``s8wgmma_…`` with a tile of ``TILES8`` / ``TILES8_WG``, split-K 1..16, the INT8 pointwise
    kernel (``s8pw``) or streaming kernel (``s8stream_…`` with a tile of ``STREAM8_TILES``), a
    whole-layer tactic, a direct grouped one (``gdirect_q…``) or cuDNN's
    (``cudnn_a<algo>``). Plans and
    timing-cache entries are checked with it before their tactics are used."""
    if not isinstance(name, str):
        return False
    from backends.gpu.kernels.conv import CUBLAS_TACTIC, CUBLASLT_TACTIC, GEMV_TACTIC, TILES, TILES_WG
    from backends.gpu.kernels.cudnn import parse_tactic as parse_cudnn
    from backends.gpu.kernels.grouped import parse_gdirect

    if name in (CUBLAS_TACTIC, CUBLASLT_TACTIC, GEMV_TACTIC) or parse_gdirect(name) is not None:
        return True
    if parse_cudnn(name) is not None:
        return True
    from backends.gpu.kernels.int8 import parse_tactic8
    from backends.gpu.kernels.int8_pw import POINTWISE8

    if name == POINTWISE8.name:
        return True
    if name.startswith("s8stream_"):
        return parse_tactic8(name) is not None
    if name.startswith(("s8igemm_", "s8wgmma_")):
        t8 = parse_tactic8(name)
        return t8 is not None and t8.name == name and 1 <= t8.splits <= MAX_SPLITS
    from backends.gpu.lower import parse_tactic

    t = parse_tactic(name)
    return t is not None and t.name == name and t.tile in TILES + TILES_WG and 1 <= t.splits <= MAX_SPLITS


def _shortlist(g: ConvGeometry, level: int) -> list[ConvTactic]:
    from backends.gpu.kernels.conv import wgmma_usable

    cands = candidate_tactics(g, wgmma=wgmma_usable())
    return _bounded(cands, heuristic_tactic(g), level)


def _bounded(cands: list, h: Any, level: int) -> list:
    """Optimization levels 1-2 time only the heuristic and its neighbours in tile size (same split
    count first); level 3 and above time every candidate."""
    if level >= 3 or len(cands) <= 4:
        return cands
    keep = [h] + sorted((c for c in cands if c != h),
                        key=lambda c: (c.splits != h.splits, abs(c.tile.bm - h.tile.bm) + abs(c.tile.bn - h.tile.bn)))
    return keep[: 2 + 2 * level]


def _time_launches(tactics: list, launch: Any, reps: int) -> dict[str, float]:
    """Median milliseconds per ``launch(tactic)``: ``reps`` launches captured into one CUDA graph on a
    private stream, replayed in 3 timed groups after a warm-up. This is how the runtime runs them;
    launching one by one from Python would time the host's launch cost instead wherever a kernel is
    shorter than it (most batch-1 layers), and pick a tile at random. A tactic that cannot launch
    (resources) is simply not a candidate."""
    import cupy as cp

    from backends.gpu.graph import LaunchSequence

    stream = cp.cuda.Stream(non_blocking=True)
    out: dict[str, float] = {}
    for t in tactics:
        try:
            seq = LaunchSequence()
            for _ in range(reps):
                seq.add(t.name, lambda t=t: launch(t))
            graph = seq.capture(stream)
            out[t.name] = graph.time_ms(replays=1, groups=3, warmup=1)["median"] / reps
        except Exception as e:
            if device_fault(e):  # the context is lost: every later call would fail for this reason
                raise RuntimeError(f"tactic {t.name} faulted on the device while being timed: {e}") from e
            continue
    return out


# CUDA runtime errors that leave the context unusable (cudaErrorIllegalAddress, LaunchTimeout,
# HardwareStackError, IllegalInstruction, MisalignedAddress, InvalidAddressSpace, InvalidPc,
# LaunchFailure): a kernel fault, never a tactic that merely cannot launch here
DEVICE_FAULTS = frozenset({700, 702, 714, 715, 716, 717, 718, 719})


def device_fault(error: BaseException) -> bool:
    """Whether ``error`` (a CuPy CUDARuntimeError carries ``status``) is a kernel fault. Tactic timing
    drops a tactic that cannot launch (resources), but a fault names its tactic and stops the build:
    swallowed, it would surface later, far from its cause."""
    return getattr(error, "status", None) in DEVICE_FAULTS


def time_conv(g: ConvGeometry, tactics: list[ConvTactic], act: tuple[int, float, float], residual: bool,
              reps: int = 10) -> dict[str, float]:
    """Median milliseconds per launch of each tactic on random data (CUDA events)."""
    import cupy as cp

    from backends.gpu.kernels.conv import conv2d

    x, w, b, y, res = _conv_operands(g, (g.k, g.r, g.s, g.cgp), g.ktot, residual)
    ws = cp.empty(max([t.workspace_bytes(g) for t in tactics] + [4]) // 4, cp.float32)
    return _time_launches(tactics, lambda t: conv2d(x, w, b, y, g, t, act, res, ws), reps)


def _conv_operands(g: ConvGeometry, w_shape: tuple[int, ...], fan_in: int, residual: bool) -> tuple:
    """Random fp16 NHWC x and weights of ``w_shape`` (scaled by ``fan_in``), zero bias, y and a
    residual like y (or None) on the device: a convolution's operands for timing."""
    import cupy as cp

    rng = np.random.default_rng(0)
    x = cp.asarray(rng.uniform(-1, 1, (g.n, g.h, g.w, g.cp)).astype(np.float16))
    w = cp.asarray((rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(np.float16))
    y = cp.empty((g.n, g.p, g.q, g.kp), cp.float16)
    return x, w, cp.zeros(g.kp, cp.float32), y, (cp.empty_like(y) if residual else None)


def _matrix_operands(g: ConvGeometry, c: int, k: int, residual: bool) -> tuple:
    """Random fp16 x (M x c) and w (k x c), zero bias, y (M x k) and a residual like y (or None)
    on the device: a GEMM-shaped layer's operands for timing."""
    import cupy as cp

    rng = np.random.default_rng(0)
    x = cp.asarray(rng.uniform(-1, 1, (g.m, c)).astype(np.float16))
    w = cp.asarray((rng.standard_normal((k, c)) / np.sqrt(g.c)).astype(np.float16))
    y = cp.empty((g.m, k), cp.float16)
    return x, w, cp.zeros(k, cp.float32), y, (cp.empty_like(y) if residual else None)


def time_conv_cublas(g: ConvGeometry, act: tuple[int, float, float], residual: bool,
                     reps: int = 10) -> dict[str, float]:
    """Milliseconds of the cuBLAS GEMM + epilogue for a GEMM-shaped convolution ({} where cuBLAS
    cannot run here), timed like the tiles so the two compare."""
    from backends.gpu.kernels import cublas
    from backends.gpu.kernels.conv import CublasTactic, conv2d_cublas, cublas_eligible

    if not cublas_eligible(g) or not cublas.available():
        return {}
    x, w, b, y, res = _matrix_operands(g, g.c, g.k, residual)
    return _time_launches([CublasTactic()], lambda t: conv2d_cublas(x, w, b, y, g, act, res), reps)


def time_conv_cublaslt(g: ConvGeometry, act: tuple[int, float, float], residual: bool,
                       reps: int = 10) -> dict[str, float]:
    """Milliseconds of the fused-epilogue cuBLASLt GEMM ({} where it cannot take the layer here)."""
    from backends.gpu.kernels import cublaslt
    from backends.gpu.kernels.conv import CublasLtTactic, conv2d_cublaslt, cublaslt_eligible

    if not cublaslt_eligible(g, act) or not cublaslt.available():
        return {}
    x, w, b, y, res = _matrix_operands(g, g.c, g.k, residual)
    b = b.astype("float16")  # the tactic's bias has D's type
    if not cublaslt.supported(g.m, g.k, g.c, act[0], b):
        return {}
    return _time_launches([CublasLtTactic()], lambda t: conv2d_cublaslt(x, w, b, y, g, act, res), reps)


def time_conv_cudnn(g: ConvGeometry, act: tuple[int, float, float], residual: bool,
                    reps: int = 10) -> dict[str, float]:
    """Milliseconds of cuDNN's fused convolution, per algorithm it offers ({} without cuDNN or where
    the fused call cannot take the layer), timed like the tiles; an algorithm the call refuses is
    not a candidate."""
    from backends.gpu.kernels.conv import conv2d_cudnn, cudnn_tactics

    try:
        tactics = cudnn_tactics(g, act)
    except Exception:  # the library loads but cannot run here (no device, no handle)
        return {}
    if not tactics:
        return {}
    x, w, b, y, res = _conv_operands(g, (g.k, g.r, g.s, g.cgp), g.ktot, residual)
    b = b.astype("float16")[:g.k]  # the tactic's bias has the output's type
    return _time_launches(tactics, lambda t: conv2d_cudnn(x, w, b, y, g, act, res, t.algo), reps)


def time_conv_gemv(g: ConvGeometry, act: tuple[int, float, float], residual: bool,
                   reps: int = 10) -> dict[str, float]:
    """Milliseconds of ``conv2d_gemv`` for a 1x1 convolution on few rows ({} where it does not
    apply), timed like the tiles so the two compare."""
    from backends.gpu.kernels.conv import GemvTactic, conv2d_gemv, gemv_eligible

    if not gemv_eligible(g):
        return {}
    x, w, b, y, res = _matrix_operands(g, g.cp, g.kp, residual)
    conv2d_gemv(x, w, b, y, g, act, res)  # loads the module outside the graph capture
    return _time_launches([GemvTactic()], lambda t: conv2d_gemv(x, w, b, y, g, act, res), reps)


def time_conv_gdirect(g: ConvGeometry, groups: int, act: tuple[int, float, float], residual: bool,
                      reps: int = 10) -> dict[str, float]:
    """Milliseconds of each direct grouped tactic (``kernels.grouped``) for a grouped convolution of
    ``groups`` true groups ({} where the kernel does not apply), timed like the tiles."""
    from backends.gpu.kernels.grouped import grouped_conv, grouped_direct_tactics

    tactics = grouped_direct_tactics(g, groups)
    if not tactics:
        return {}
    cg, kg = g.c // groups, g.k // groups
    x, w, b, y, res = _conv_operands(g, (groups, g.r, g.s, cg, kg), g.r * g.s * cg, residual)
    grouped_conv(x, w, b, y, g, groups, tactics[0], act, res)  # loads the module outside the graph capture
    return _time_launches(tactics, lambda t: grouped_conv(x, w, b, y, g, groups, t, act, res), reps)


def _shortlist8(g: ConvGeometry, level: int) -> list:
    from backends.gpu.kernels.int8 import candidate_tactics8, heuristic_tactic8, wgmma_usable8

    cands = candidate_tactics8(g, wgmma=wgmma_usable8())
    h = heuristic_tactic8(g)
    if h not in cands:
        cands.insert(0, h)
    return _bounded(cands, h, level)


def time_conv8(g: ConvGeometry, tactics: list, epi: Any, residual: bool, ldy: int, reps: int = 10) -> dict[str, float]:
    """Median milliseconds per launch of each INT8 tactic, on random int8 data with the layer's epilogue."""
    import cupy as cp

    from backends.gpu.kernels import int8 as int8k

    rng = np.random.default_rng(0)
    c16, k16 = int8k.cp16(g.c), int8k.cp16(g.k)
    x = cp.asarray(rng.integers(-128, 128, (g.n, g.h, g.w, c16), dtype=np.int8))
    w = cp.asarray(rng.integers(-128, 128, (g.k, g.r, g.s, c16), dtype=np.int8))
    dev = int8k.DeviceEpilogue.upload(epi)
    y = cp.empty((g.m, ldy), cp.int8 if epi.quantized else cp.float32)
    res = cp.asarray(rng.integers(-128, 128, (g.m, k16), dtype=np.int8)) if residual else None
    ws = cp.empty(max([t.workspace_bytes(g) for t in tactics] + [4]) // 4, cp.int32)
    return _time_launches(tactics, lambda t: int8k.conv2d_s8(x, w, y, g, t, dev, res, ws, ldy), reps)


def time_conv8_pointwise(g: ConvGeometry, epi: Any, residual: bool, ldy: int) -> dict[str, float]:
    """``time_conv8`` of the CUDA-core pointwise kernel where it fits the layer and compiles here."""
    from backends.gpu.kernels.int8_pw import POINTWISE8, pointwise8_runs

    if not pointwise8_runs(g, ldy):
        return {}
    return time_conv8(g, [POINTWISE8], epi, residual, ldy)


def time_conv8_stream(g: ConvGeometry, epi: Any, residual: bool, ldy: int) -> dict[str, float]:
    """``time_conv8`` of the streaming 1x1 kernel's tiles that fit the layer, where the module compiles here."""
    from backends.gpu.kernels.int8_stream import stream8_candidates, stream8_usable

    cands = stream8_candidates(g, ldy)
    if not cands or not stream8_usable():
        return {}
    return time_conv8(g, cands, epi, residual, ldy)


def segment_ops(network: Network, layer_names: list[str]) -> list[Any]:
    """The lowered launches of the GPU segments among ``layer_names`` (``lower.lower``)."""
    from backends.gpu.backend import split_segments
    from backends.gpu.lower import lower

    return [op for on_gpu, layers in split_segments(network, layer_names) if on_gpu
            for op in lower(network, layers, []).ops]


def _tensor_core_convs(ops: list[Any]) -> tuple[list, list]:
    """The FP16 (name, geometry, act, residual, unscaled, true group count, the layer's own
    geometry where that one is its space-to-depth form) and INT8 (name,
    geometry, epilogue, residual, ldy) tensor-core convolutions among lowered launches ``ops``."""
    convs: list[tuple[str, ConvGeometry, tuple[int, float, float], bool, bool, int, ConvGeometry | None]] = []
    convs8: list[tuple[str, ConvGeometry, Any, bool, int]] = []
    for op in ops:
        if op.kind == "conv":
            convs.append((op.label, op.info["geom"], op.info["act"], op.info["res"] is not None,
                          op.info.get("scale") is None, op.info.get("groups", op.info["geom"].groups),
                          op.info.get("s2d_of")))
        elif op.kind == "conv8":
            convs8.append((op.label, op.info["geom"], op.info["epi"], op.info["res"] is not None,
                           op.info["ldy"]))
    return convs, convs8


def _time_whole_layer(g: ConvGeometry, act: tuple[int, float, float], res: bool, groups: int,
                      own: ConvGeometry | None, allowed: set[str]) -> dict[str, float]:
    """The whole-layer tactics of one FP16 convolution: the ``allowed`` libraries, the GEMV and the
    direct grouped kernel; cuDNN on ``own`` (the layer's geometry) where ``g`` is its space-to-depth form."""
    times: dict[str, float] = {}
    if "cublas" in allowed:
        times.update(time_conv_cublas(g, act, res))
    if "cublaslt" in allowed:
        times.update(time_conv_cublaslt(g, act, res))
    times.update(time_conv_gemv(g, act, res))
    if "cudnn" in allowed:
        times.update(time_conv_cudnn(own or g, act, res))
    if groups > 1:
        times.update(time_conv_gdirect(g, groups, act, res))
    return times


def _choose(log: Logger, cache: TimingCache, key: str, layer: str, times: dict[str, float]) -> str:
    """The fastest of ``times``, recorded in ``cache`` under ``key``; a verbose log line names it and
    the runners-up (as a TensorRT builder's verbose log lists each tactic's time), so a user can see
    how close the choice was."""
    ranked = sorted(times, key=times.get)
    best = ranked[0]
    others = ", ".join(f"{t} {times[t]:.4f}" for t in ranked[1:4])
    log.verbose(f"Tactic of {layer}: {best} {times[best]:.4f} ms of {len(times)} timed"
                + (f" (next: {others})" if others else ""))
    cache.entries[key] = {"tactic": best, "ms": round(times[best], 5), "candidates": len(times)}
    return best


def select_tactics(network: Network, layer_names: list[str], cache_path: str | None = None, level: int = 3,
                   logger: Logger | None = None, sources: tuple[str, ...] | None = None,
                   cache: TimingCache | None = None) -> dict[str, str]:
    """Layer name -> winning tactic name for every tensor-core convolution among ``layer_names``.

    ``sources``: the libraries whose kernels may be timed beside hetrt's own ('cublas', 'cublaslt',
    'cudnn'; None: all). A restricted build keys its timing-cache entries by the sources it allowed.
    ``cache``: an open timing cache (saved here) instead of the file at ``cache_path``."""
    cache = cache or TimingCache(cache_path)
    chosen, _ = time_tactics(network, layer_names, cache, level, logger or Logger(), sources)
    cache.save()
    return chosen


def time_tactics(network: Network, layer_names: list[str], cache: TimingCache, level: int, log: Logger,
                 sources: tuple[str, ...] | None = None,
                 ops: list[Any] | None = None) -> tuple[dict[str, str], dict[str, float]]:
    """``select_tactics``'s work on an open cache: (layer -> winning tactic, layer -> its time in ms)
    for the tensor-core convolutions among ``layer_names`` (no times at level 0). ``ops``: their
    segments' launches where the caller lowered them already (``segment_ops``)."""
    from backends.gpu.kernels import conv as convk

    t0 = time.perf_counter()
    convs, convs8 = _tensor_core_convs(segment_ops(network, layer_names) if ops is None else ops)
    allowed = set(LIBRARY_SOURCES if sources is None else sources)
    restricted = "" if allowed >= set(LIBRARY_SOURCES) else f" sources={','.join(sorted(allowed))}"
    if (convs or convs8) and level > 0:  # the modules compile side by side
        from backends.gpu.kernels import int8 as int8k
        from backends.gpu.kernels.compile import compile_concurrently

        compile_concurrently((convk.compile_tasks() if convs else []) + (int8k.compile_tasks() if convs8 else []))
    chosen: dict[str, str] = {}
    ms: dict[str, float] = {}
    counts = {"timed": 0, "hits": 0}
    # a progress bar with the CLI on a terminal (Logger.progress_factory), throttled [I] lines otherwise
    n_convs = len(convs) + len(convs8)
    progress = Progress(log, "Timing GPU tactics", total=n_convs) if level > 0 and n_convs else None
    for i, (name, g, act, res, unscaled, groups, own) in enumerate(convs):
        if progress is not None:
            progress.update(i)
        if level <= 0:
            chosen[name] = heuristic_tactic(g).name
            continue
        key = cache.key(signature(g, act, res, groups) + ("" if unscaled else " se") + restricted)

        def measure(g=g, act=act, res=res, unscaled=unscaled, groups=groups, own=own) -> dict[str, float]:
            times = time_conv(g, _shortlist(g, level), act, res)
            if unscaled:  # a squeeze-excitation scale rides in the tile loads: no whole-layer form
                times.update(_time_whole_layer(g, act, res, groups, own, allowed))
            return times

        _timed_or_cached(log, cache, key, name, measure, chosen, ms, counts)
        chosen.setdefault(name, heuristic_tactic(g).name)
    for i, (name, g, epi, res, ldy) in enumerate(convs8, len(convs)):
        if progress is not None:
            progress.update(i)
        if level <= 0:
            continue  # the lowering falls back to int8.heuristic_tactic8
        float_out = not epi.quantized
        nl = f" {epi.nonlinear}" if epi.nonlinear else ""  # a SiLU / hard-swish epilogue times differently
        key = cache.key(f"{signature(g, (0, 0.0, 0.0), res).replace('conv', 'conv8', 1)} f{int(float_out)} "
                        f"ldy{ldy}{nl}")

        def measure8(g=g, epi=epi, res=res, ldy=ldy) -> dict[str, float]:
            times = time_conv8(g, _shortlist8(g, level), epi, res, ldy)
            times.update(time_conv8_pointwise(g, epi, res, ldy))
            times.update(time_conv8_stream(g, epi, res, ldy))
            return times

        _timed_or_cached(log, cache, key, name, measure8, chosen, ms, counts)
    if progress is not None:
        progress.update(n_convs)
    log.info(f"GPU tactics: {len(convs) + len(convs8)} convolutions ({len(convs8)} INT8), {counts['timed']} timed, "
             f"{counts['hits']} from the timing cache, level {level}, {time.perf_counter() - t0:.1f} s")
    return chosen, ms


def _timed_or_cached(log: Logger, cache: TimingCache, key: str, name: str, measure: Any, chosen: dict[str, str],
                     ms: dict[str, float], counts: dict[str, int], known: Any = compiled_tactic) -> None:
    """The cached choice of ``key`` where the cache holds a tactic ``known`` accepts (by default one
    that compiles here: a forged entry is timed again), else ``measure()``'s fastest; into ``chosen``
    and ``ms`` (nothing where no candidate ran)."""
    hit = cache.entries.get(key)
    if isinstance(hit, dict) and known(hit.get("tactic")):
        chosen[name] = hit["tactic"]
        if isinstance(hit.get("ms"), (int, float)) and hit["ms"] > 0:
            ms[name] = float(hit["ms"])
        counts["hits"] += 1
        return
    times = measure()
    if not times:
        return
    chosen[name] = _choose(log, cache, key, name, times)
    ms[name] = times[chosen[name]]
    counts["timed"] += 1

"""Small IR networks for the DLA backend tests, and the comparison against the reference backend."""

from __future__ import annotations

import numpy as np

from backends.dla import DlaBackend
from backends.reference.executor import execute
from engine.ir.dtypes import Precision
from engine.ir.layers import ActivationSpec, ActivationType, ConvolutionParams
from engine.ir.network import Network

FP16 = Precision.FP16


def conv(net: Network, x, k: int, r: int, rng, pad: int = 0, stride: int = 1, groups: int = 1, name=None,
         act: str | None = None, residual=None, dilation: int = 1):
    c = net.tensors[x if isinstance(x, str) else x.name].shape[1]
    w = (rng.standard_normal((k, c // groups, r, r)) / np.sqrt(c // groups * r * r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    p = ConvolutionParams(num_output_maps=k, kernel=(r, r), stride=(stride, stride), pre_padding=(pad, pad),
                          post_padding=(pad, pad), dilation=(dilation, dilation), groups=groups,
                          activation=ActivationSpec(ActivationType(act)) if act else None,
                          residual=residual is not None)
    ins = [x] if residual is None else [x, residual]
    return net.tensor(net.add_layer(p, ins, {"kernel": w, "bias": b}, name=name).outputs[0])


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def run_both(net: Network, cfg, seed: int, layers=None):
    """(dla outputs, reference FP16 outputs, stats, partition) on fresh seeded inputs."""
    rng = np.random.default_rng(seed)
    be = DlaBackend(cfg, 0)
    part = be.compile(net, layers or [la.name for la in net.layers], FP16)
    feeds = {n: rng.standard_normal(net.tensors[n].shape).astype(np.float32) for n in net.inputs}
    out, stats = be.execute(part, feeds)
    ref = execute(net, feeds, precision_of=lambda la: FP16)
    return out, ref, stats, part

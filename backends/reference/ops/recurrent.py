"""RNN, LSTM and GRU with ONNX semantics, in float32 (see ``engine.ir.recurrent`` for the layout).

The input projection X·W^T + Wb is one matrix product over all time steps; the recurrence then
runs step by step. Variable sequence lengths are handled per batch entry: a reverse direction
starts at the entry's own last step, outputs past the length are zero and the final state is the
state after the last valid step.

The code is written against an array module ``xp`` (numpy here; the GPU backend passes CuPy), so
the GPU runs the very recurrence this module checks against ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from engine.ir.errors import ExecutionError
from engine.ir.layers import LayerKind
from engine.ir.recurrent import RecurrentParams

Act = Callable[[np.ndarray], np.ndarray]
_F = np.float32


def _expit(xp) -> Callable:
    if xp is np:
        return special.expit
    from cupyx.scipy import special as xp_special

    return xp_special.expit


def _act(name: str, alpha: float, beta: float, xp=np) -> Act:
    a, b = _F(alpha), _F(beta)
    expit = _expit(xp) if name == "Sigmoid" else None
    table: dict[str, Act] = {
        "Relu": lambda x: xp.maximum(x, _F(0)),
        "Tanh": xp.tanh,
        "Sigmoid": lambda x: expit(x).astype(_F, copy=False),
        "Affine": lambda x: a * x + b,
        "LeakyRelu": lambda x: xp.where(x >= 0, x, a * x),
        "ThresholdedRelu": lambda x: xp.where(x > a, x, _F(0)),
        "ScaledTanh": lambda x: a * xp.tanh(b * x),
        "HardSigmoid": lambda x: xp.clip(a * x + b, _F(0), _F(1)),
        "Elu": lambda x: xp.where(x > 0, x, a * xp.expm1(xp.minimum(x, _F(0)))),
        "Softsign": lambda x: x / (_F(1) + xp.abs(x)),
        "Softplus": lambda x: xp.logaddexp(_F(0), x).astype(_F, copy=False),
    }
    return table[name]


def _clipped(f: Act, clip: float | None, xp=np) -> Act:
    if clip is None:
        return f
    c = _F(clip)
    return lambda x: f(xp.clip(x, -c, c))


def _lengths(given: dict, weights: dict, seq: int, batch: int, xp=np):
    lens = given.get("sequence_lens", weights.get("sequence_lens"))
    if lens is None:
        return xp.full(batch, seq, np.int64)
    lens = xp.asarray(lens).astype(np.int64).reshape(-1)
    if lens.size and (int(lens.min()) < 0 or int(lens.max()) > seq):
        raise ExecutionError(f"sequence_lens {lens.tolist()} must lie in [0, {seq}]")
    return lens


def _state(name: str, given: dict, weights: dict, layout: int, shape: tuple[int, int, int], xp=np):
    s = given.get(name, weights.get(name))
    if s is None:
        return xp.zeros(shape, _F)
    s = xp.asarray(s, _F)
    return xp.swapaxes(s, 0, 1) if layout == 1 else s  # → (dirs, batch, H)


def recurrent(layer, inputs, weights, xp=np):
    """The reference kernel (``xp`` numpy); float32 inputs and weights, float32 outputs."""
    p: RecurrentParams = layer.params
    x = inputs[0].astype(_F, copy=False)
    if p.layout == 1:
        x = xp.swapaxes(x, 0, 1)  # → (seq, batch, I)
    seq, batch, _ = x.shape
    given = dict(zip(p.runtime_inputs, inputs[1:]))
    lens = _lengths(given, weights, seq, batch, xp)
    d, h, g = p.num_directions, p.hidden_size, p.gates
    h0 = _state("initial_h", given, weights, p.layout, (d, batch, h), xp)
    c0 = _state("initial_c", given, weights, p.layout, (d, batch, h), xp)
    y = xp.zeros((seq, d, batch, h), _F)
    y_h = xp.zeros((d, batch, h), _F)
    y_c = xp.zeros((d, batch, h), _F)
    acts = p.resolved_activations()
    b = weights.get("B")
    if b is None:
        b = xp.zeros((d, 2 * g * h), _F)
    for k in range(d):
        reverse = p.direction == "reverse" or k == 1
        fs = [_clipped(_act(*a, xp=xp), p.clip, xp) for a in acts[k * p.functions:(k + 1) * p.functions]]
        if p.kind is LayerKind.LSTM:  # h(C) is not clipped: clip bounds the gate and candidate inputs
            fs[2] = _act(*acts[k * p.functions + 2], xp=xp)
        wb, rb = b[k, :g * h], b[k, g * h:]
        xw = x @ weights["W"][k].T + wb  # (seq, batch, G*H)
        cell = _CELLS[p.kind]
        y_h[k], y_c[k] = _run_direction(cell, p, fs, xw, weights["R"][k], rb, weights, k, h0[k], c0[k], lens,
                                        reverse, y[:, k], xp)
    y_h_out, y_c_out = (y_h, y_c) if p.layout == 0 else (xp.swapaxes(y_h, 0, 1), xp.swapaxes(y_c, 0, 1))
    outs = [xp.transpose(y, (2, 0, 1, 3)) if p.layout == 1 else y, y_h_out]
    if p.kind is LayerKind.LSTM:
        outs.append(y_c_out)
    return [xp.ascontiguousarray(o) for o in outs]


def _run_direction(cell, p, fs, xw, r, rb, weights, k, h, c, lens, reverse, y_dir, xp=np):
    """Run one direction; writes its outputs into ``y_dir`` (seq, batch, H), returns the final states."""
    seq, batch = xw.shape[0], xw.shape[1]
    rows = xp.arange(batch)
    h, c = h.copy(), c.copy()
    for step in range(seq):
        valid = step < lens
        t = xp.where(valid, (lens - 1 - step) if reverse else xp.full(batch, step, np.int64), 0)
        h_new, c_new = cell(p, fs, xw[t, rows], h, c, r, rb, weights, k)
        h = xp.where(valid[:, None], h_new, h)
        c = xp.where(valid[:, None], c_new, c)
        y_dir[t[valid], rows[valid]] = h[valid]
    return h, c


def _rnn_cell(p, fs, xw, h, c, r, rb, weights, k):
    return fs[0](xw + h @ r.T + rb), c


def _gru_cell(p, fs, xw, h, c, r, rb, weights, k):
    n = p.hidden_size
    f, g = fs
    hr = h @ r[:2 * n].T + rb[:2 * n]
    z = f(xw[:, :n] + hr[:, :n])
    rr = f(xw[:, n:2 * n] + hr[:, n:])
    if p.linear_before_reset:
        cand = g(xw[:, 2 * n:] + rr * (h @ r[2 * n:].T + rb[2 * n:]))
    else:
        cand = g(xw[:, 2 * n:] + (rr * h) @ r[2 * n:].T + rb[2 * n:])
    return (_F(1) - z) * cand + z * h, c


def _lstm_cell(p, fs, xw, h, c, r, rb, weights, k):
    n = p.hidden_size
    f, g, hf = fs
    gates = xw + h @ r.T + rb
    pp = weights.get("P")
    pi, po, pf = (pp[k, :n], pp[k, n:2 * n], pp[k, 2 * n:]) if pp is not None else (_F(0), _F(0), _F(0))
    i = f(gates[:, :n] + pi * c)
    fg = _F(1) - i if p.input_forget else f(gates[:, 2 * n:3 * n] + pf * c)  # input_forget couples f to i
    c_new = fg * c + i * g(gates[:, 3 * n:])
    o = f(gates[:, n:2 * n] + po * c_new)
    return o * hf(c_new), c_new


_CELLS = {LayerKind.RNN: _rnn_cell, LayerKind.GRU: _gru_cell, LayerKind.LSTM: _lstm_cell}

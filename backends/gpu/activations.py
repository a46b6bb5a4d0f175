"""Activation codes shared by every fused epilogue: the IR's ActivationSpec -> (code, alpha, beta).

The CUDA side is ``kernels.common.ACT_SRC``; the codes here and the ``switch`` there must agree.
"""

from __future__ import annotations

from engine.ir.layers import ActivationSpec, ActivationType

# code per activation; alpha/beta follow the IR's meaning (see engine.ir.layers.ActivationType).
ACT_CODES: dict[ActivationType | None, int] = {
    None: 0,
    ActivationType.RELU: 1,
    ActivationType.CLIP: 2,
    ActivationType.LEAKY_RELU: 3,
    ActivationType.SIGMOID: 4,
    ActivationType.SILU: 5,
    ActivationType.HARD_SWISH: 6,
    ActivationType.TANH: 7,
    ActivationType.HARD_SIGMOID: 8,
    ActivationType.GELU_ERF: 9,
    ActivationType.GELU_TANH: 10,
    ActivationType.ELU: 11,
    ActivationType.SOFTPLUS: 12,
    ActivationType.MISH: 13,
    ActivationType.SELU: 14,
    ActivationType.CELU: 15,
    ActivationType.SOFTSIGN: 16,
    ActivationType.THRESHOLDED_RELU: 17,
}


def act_args(spec: ActivationSpec | None) -> tuple[int, float, float]:
    """(code, alpha, beta) for a kernel launch; ``None`` is the identity."""
    if spec is None:
        return 0, 0.0, 0.0
    return ACT_CODES[spec.type], float(spec.alpha), float(spec.beta)

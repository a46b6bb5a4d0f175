"""ONNX Einsum as reductions, transposes and batched matrix products.

Operands are contracted left to right, two at a time. For a pair, every label falls in one class:
batch (in both operands and still needed), contracted (in both, needed no more), kept from one
operand, or summed away in one operand alone. Labels summed in one operand are reduced first; each
operand is then transposed to (batch, kept, contracted) or (batch, contracted, kept) and reshaped
to a (batch..., M, K) x (batch..., K, N) MatrixMultiply whose result is reshaped back to (batch,
kept A, kept B) labels. The last step transposes to the output's label order. So an attention
block written as ``bhqd,bhkd->bhqk`` becomes one batched product with a transposed operand, which
every backend already runs on its matrix path.

Supported: explicit and implicit outputs, ``...`` (the same dimensions in every operand that has
it), any number of operands. Not supported, with an ``UnsupportedError``: a label repeated within
one operand (diagonals and traces), broadcasting a label of size 1 against a larger one, and
non-float operands.
"""

from __future__ import annotations

import math

from engine.ir.layers import IdentityParams, MatrixMultiplyParams, ReduceOp, ReduceParams, ShuffleParams
from engine.onnx_parser.context import NodeContext, Ref
from engine.onnx_parser.registry import converter

_ELLIPSIS_BASE = 0x2460  # labels for '...' dims: characters no equation can contain


def parse_equation(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Each operand's labels (one character per dim, '...' expanded) and the output's labels."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation '{equation}' has {len(terms)} operands, the node has {len(ranks)} inputs")
    ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell_labels = "".join(chr(_ELLIPSIS_BASE + i) for i in range(ell))
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - len(t.replace("...", ""))
            if n < 0 or t.count("...") > 1:
                raise ValueError(f"operand '{t}' does not fit an input of rank {r}")
            t = t.replace("...", ell_labels[ell - n:])
        if len(t) != r or not all(c.isalpha() or ord(c) >= _ELLIPSIS_BASE for c in t):
            raise ValueError(f"operand '{t}' does not label the {r} dims of its input")
        out_terms.append(t)
    if arrow:
        out = rhs.replace("...", ell_labels)
        if not all(c.isalpha() or ord(c) >= _ELLIPSIS_BASE for c in out) or len(set(out)) != len(out):
            raise ValueError(f"output '{rhs}' must name distinct labels")
        if any(c not in "".join(out_terms) for c in out):
            raise ValueError(f"output '{rhs}' names a label no operand has")
    else:  # implicit: the ellipsis dims, then the labels used once, in alphabetical order
        counts = {c: "".join(out_terms).count(c) for c in "".join(out_terms)}
        out = ell_labels + "".join(sorted(c for c, k in counts.items() if k == 1 and ord(c) < _ELLIPSIS_BASE))
    return out_terms, out


class _Builder:
    """Emits the intermediate layers of one Einsum node and tracks each value's labels."""

    def __init__(self, nc: NodeContext, sizes: dict[str, int]) -> None:
        self.nc = nc
        self.sizes = sizes

    def reduce(self, x: Ref, labels: str, drop: set[str]) -> tuple[Ref, str]:
        axes = tuple(i for i, c in enumerate(labels) if c in drop)
        if not axes:
            return x, labels
        y = self.nc.add1(ReduceParams(ReduceOp.SUM, axes, False), [x], final=False)
        return y, "".join(c for c in labels if c not in drop)

    def shuffle(self, x: Ref, labels: str, order: str, shape: tuple[int, ...] | None = None) -> Ref:
        """``x`` transposed to label ``order``, then reshaped to ``shape`` (when given)."""
        perm = tuple(labels.index(c) for c in order)
        identity = perm == tuple(range(len(perm)))
        target = tuple(self.sizes[c] for c in order)
        if identity and (shape is None or shape == target):
            return x
        params = ShuffleParams(first_perm=None if identity else perm,
                               reshape=None if shape is None or shape == target else shape)
        return self.nc.add1(params, [x], final=False)

    def contract(self, a: Ref, la: str, b: Ref, lb: str, needed: set[str]) -> tuple[Ref, str]:
        a, la = self.reduce(a, la, {c for c in la if c not in lb and c not in needed})
        b, lb = self.reduce(b, lb, {c for c in lb if c not in la and c not in needed})
        batch = "".join(c for c in la if c in lb and c in needed)
        inner = "".join(c for c in la if c in lb and c not in needed)
        keep_a = "".join(c for c in la if c not in lb)
        keep_b = "".join(c for c in lb if c not in la)
        dims = [self.sizes[c] for c in batch]
        m = math.prod(self.sizes[c] for c in keep_a)
        k = math.prod(self.sizes[c] for c in inner)
        n = math.prod(self.sizes[c] for c in keep_b)
        a2 = self.shuffle(a, la, batch + keep_a + inner, (*dims, m, k))
        b2 = self.shuffle(b, lb, batch + inner + keep_b, (*dims, k, n))
        y = self.nc.add1(MatrixMultiplyParams(), [a2, b2], final=False)
        labels = batch + keep_a + keep_b
        shape = tuple(self.sizes[c] for c in labels)
        if shape != (*dims, m, n):
            y = self.nc.add1(ShuffleParams(reshape=shape), [y], final=False)
        return y, labels


@converter("Einsum")
def einsum(nc):
    refs = nc.inputs()
    if not refs:
        raise nc.error("Einsum needs at least one input")
    dtypes = {nc.np_dtype(r) for r in refs}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        raise nc.unsupported(f"Einsum on {sorted(str(d) for d in dtypes)} inputs: only float operands of one "
                             f"type are supported")
    equation = nc.attr("equation")
    if not isinstance(equation, str):
        raise nc.error("attribute 'equation' is required")
    shapes = [nc.shape(r) for r in refs]
    try:
        terms, out = parse_equation(equation, [len(s) for s in shapes])
    except ValueError as e:
        raise nc.error(str(e)) from None
    sizes: dict[str, int] = {}
    for t, shape in zip(terms, shapes):
        if len(set(t)) != len(t):
            raise nc.unsupported(f"equation '{equation}': a label repeated in one operand (a diagonal or "
                                 f"trace) is not supported")
        for c, d in zip(t, shape):
            if sizes.setdefault(c, d) != d:
                raise nc.unsupported(f"equation '{equation}': label '{_show(c)}' has sizes {sizes[c]} and {d}; "
                                     f"broadcasting a label is not supported")
    build = _Builder(nc, sizes)
    x, labels = refs[0], terms[0]
    for i in range(1, len(refs)):
        needed = set(out).union(*terms[i + 1:])
        x, labels = build.contract(x, labels, refs[i], terms[i], needed)
    x, labels = build.reduce(x, labels, {c for c in labels if c not in out})
    perm = tuple(labels.index(c) for c in out)
    if perm != tuple(range(len(perm))):
        return [nc.add1(ShuffleParams(first_perm=perm), [x])]
    return [nc.add1(IdentityParams(), [x])]  # folded like any layer when the operands are constants


def _show(label: str) -> str:
    return "..." if ord(label) >= _ELLIPSIS_BASE else label

"""Accuracy of one deployment from its logits: top-k, agreement with a reference, confusion, worst samples.

Everything here is a pure function of arrays, so a result computed from the logits of 1 worker, N
local workers or a Ray cluster is the same whenever the logits are (they are: every batch is the
plan's full batch, whatever worker runs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = np.max(z, axis=1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the ``k`` largest logits (ties broken by lower class index)."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.any(order == labels[:, None], axis=1)


@dataclass
class Agreement:
    """How far a deployment's logits are from the reference model's on the same samples."""

    same_top1: float  # fraction of samples whose top-1 class equals the reference's
    kl_mean: float  # mean KL(reference || deployment) of the softmax distributions, nats
    kl_max: float
    max_abs_logit_error: float
    reference: str  # which model/oracle produced the reference logits

    def to_dict(self) -> dict:
        return {"same_top1": self.same_top1, "kl_mean": self.kl_mean, "kl_max": self.kl_max,
                "max_abs_logit_error": self.max_abs_logit_error, "reference": self.reference}


def agreement(logits: np.ndarray, ref: np.ndarray, reference: str) -> Agreement:
    lp, lq = _log_softmax(ref), _log_softmax(logits)
    kl = np.sum(np.exp(lp) * (lp - lq), axis=1)
    return Agreement(float(np.mean(np.argmax(logits, 1) == np.argmax(ref, 1))), float(np.mean(kl)),
                     float(np.max(kl)), float(np.max(np.abs(logits.astype(np.float64) - ref))), reference)


@dataclass
class EvalResult:
    """The report of one plan over one dataset."""

    name: str
    samples: int
    topk: dict[int, float] = field(default_factory=dict)  # k -> accuracy (needs labels)
    agreement: Agreement | None = None
    confusion: np.ndarray | None = None  # [true, predicted] counts
    worst: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    workers: str = ""

    def to_dict(self) -> dict:
        out = {"name": self.name, "samples": self.samples, "top_k": {str(k): v for k, v in self.topk.items()},
               "seconds": self.seconds, "samples_per_second": self.samples / self.seconds if self.seconds else None,
               "workers": self.workers}
        if self.agreement is not None:
            out["agreement"] = self.agreement.to_dict()
        if self.confusion is not None:
            out["confusion"] = self.confusion.tolist()
        if self.worst:
            out["worst"] = self.worst
        return out


def evaluate_logits(name: str, logits: np.ndarray, labels: np.ndarray | None, top_k: tuple[int, ...] = (1, 5),
                    ref: np.ndarray | None = None, reference: str = "", confusion: bool = False,
                    worst: int = 0, sample_names: list[str] | None = None) -> EvalResult:
    """Top-k accuracy, agreement with ``ref``, confusion matrix and the ``worst`` samples."""
    res = EvalResult(name, int(logits.shape[0]))
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        for k in top_k:
            res.topk[k] = float(np.mean(topk_hits(logits, labels, k)))
        if confusion:
            n = int(max(logits.shape[1], labels.max() + 1))
            cm = np.zeros((n, n), np.int64)
            np.add.at(cm, (labels, np.argmax(logits, 1)), 1)
            res.confusion = cm
    if ref is not None:
        res.agreement = agreement(logits, ref, reference)
    if worst > 0:
        res.worst = worst_samples(logits, labels, ref, worst, sample_names)
    return res


def worst_samples(logits: np.ndarray, labels: np.ndarray | None, ref: np.ndarray | None, n: int,
                  names: list[str] | None) -> list[dict]:
    """The samples the deployment gets most wrong: lowest probability of the label (or, without
    labels, the largest KL from the reference)."""
    lq = _log_softmax(logits)
    if labels is not None:
        badness = -lq[np.arange(len(labels)), labels]
        what = "nll_of_label"
    elif ref is not None:
        lp = _log_softmax(ref)
        badness = np.sum(np.exp(lp) * (lp - lq), axis=1)
        what = "kl_from_reference"
    else:
        return []
    order = np.argsort(-badness, kind="stable")[:n]
    rows = []
    for i in order:
        row = {"index": int(i), what: float(badness[i]), "predicted": int(np.argmax(logits[i]))}
        if names is not None:
            row["name"] = names[i]
        if labels is not None:
            row["label"] = int(labels[i])
        rows.append(row)
    return rows

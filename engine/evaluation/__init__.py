"""``hetrt eval``: the accuracy of a deployment (a plan: GPU, DLA, mixed, INT8) over a dataset.

``evaluate(plans, dataset)`` runs each plan over every sample — in this process, in local worker
processes or on a Ray cluster, with identical results — and reports top-k accuracy, agreement with
a reference model, a confusion matrix and the worst samples.
"""

from .dataset import DatasetError, DatasetSpec, Preprocess, load_samples, open_dataset
from .evaluate import EvalOptions, evaluate, reference_logits
from .metrics import Agreement, EvalResult, evaluate_logits

__all__ = ["Agreement", "DatasetError", "DatasetSpec", "EvalOptions", "EvalResult", "Preprocess", "evaluate",
           "evaluate_logits", "load_samples", "open_dataset", "reference_logits"]

"""Refitting a built plan's weights without rebuilding it (TensorRT's IRefitter / IParserRefitter).

``Refitter(engine)`` (or ``Refitter(plan_bytes)``) takes new weights by ONNX initializer name
(``set_named_weights``) or by source layer name and role (``set_weights``: kernel, bias, scale,
shift, ...), lists the weights that must be supplied together (``get_missing``), and ``refit()``
replays the recorded parse and optimizer folds (``engine.refit.record``) to recompute every engine
weight, then replaces them in place: execution contexts of a reference-backend engine see the new
weights on their next run. ``serialize()`` writes the refitted plan.

Rules, precisely:

* Missing weights follow TensorRT: setting one weight of an engine layer that fuses several source
  weights (a convolution with its folded BatchNorm, a merged 1×1 group) requires all of that layer's
  source weights; ``refit()`` refuses while ``get_missing()`` is not empty.
* Names, shapes and dtypes are checked against the source; a wrong one is a ``RefitError`` naming it.
* DLA layers are not refitted: their weights are compiled into DLA loadables at build time (as
  TensorRT refits GPU layers only). A refit that changes a DLA layer's weights is refused.
* Precisions are assigned by the builder's own step on the replayed network: FP16 layers get their
  new weights in float16; calibrated INT8 keeps the recorded activation scale of every tensor (the
  calibration is not rerun) and re-quantizes kernels per channel from the new weights. Refittable
  builds of explicitly quantized (Q/DQ) models are refused at build time.
* An engine whose partitions run on the CuPy GPU backend holds device copies of its weights: refit
  the plan (``Refitter(plan_bytes)``), then load the new plan.
"""

from engine.refit.refitter import RefitError, Refitter

__all__ = ["RefitError", "Refitter"]

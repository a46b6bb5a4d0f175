"""GPU lowering, split along the GPU layer table (``table.GPU_LOWERINGS``) by layer family.

``slots`` (what lowering produces), ``lowerer`` (the driver and its shared helpers), ``table``
(kind -> lowering or Unsupported, and ``supports``), and one module per family: ``conv``,
``pointwise``, ``reduce``, ``movement``; INT8 layers are in ``backends.gpu.lower_int8``.
``backends.gpu.lower`` re-exports the public names.
"""

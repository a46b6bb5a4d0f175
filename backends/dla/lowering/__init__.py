"""Lowering of an IR partition (a set of layer names) to dla_sim hardware operations.

One function, :func:`lower`, walks the partition's layers in network order and emits hardware ops
the way TensorRT's DLA compiler maps layers onto NVDLA units:

* Convolution / FullyConnected / MatMul with a constant second input: ``ConvOp`` + on-the-fly
  ``SdpOp`` (bias, fused activation, fused residual add through the SDP element-wise unit). FC and
  MatMul run as 1×1 convolutions on an (N, C, 1, 1) cube. 3×3 stride-1 layers use Winograd where
  the configuration and the output size allow it ([PG]).
* Pooling → ``PdpOp``, on the fly after the producing convolution when it is that convolution's
  only consumer and the share-line buffer rule holds, else off-line (split in width if needed).
* Activation / PReLU / Scale / ElementWise / Unary(abs) → off-line ``SdpOp`` (an activation or an
  element-wise op that directly follows a convolution with no other consumer is folded into the
  convolution's SDP instead: no memory round trip).
* LRN → ``CdpOp``. Deconvolution → stride_y·stride_x phase convolutions whose outputs are placed
  side by side along C, then a RUBIK contract and a crop ([IAS], ``dla_sim.conv_core``).
* Concatenation on channels, channel Split/Slice, layout-preserving Shuffle, Identity → addressing
  only (:class:`View`, :class:`Assembly`): producers write straight into the channel offset of the
  concatenated cube, consumers read a window of their parent's memory; no op, no time. A tensor that
  must appear in two places (the same tensor concatenated twice) is copied by a ``BdmaOp``.

Anything else raises :class:`UnsupportedError` with a reason a user can act on; hardware limits
are not checked here (``support.py`` and the units check them with ``dla_sim.limits``).

Precision: FP16 follows the project's convention — weights and operands rounded to fp16, CACC and
SDP arithmetic in fp32, outputs rounded to fp16. An INT8 partition is mixed precision: each layer
runs in the mode the INT8 builder gave it (:mod:`backends.dla.int8`: INT8 convolution / FC /
pooling with their annotated scales, FP16 for the rest, data movement in its input's
representation); every tensor is an int8 cube at one scale or an fp16 cube, boundary inputs are
declared in the representation their readers in the partition need, and an FP16 reader of an
int8 cube gets an SDP conversion (int8 -> fp16, then times the scale).

``with_weights=False`` builds the same ops without converting weights (for costing and support
checks, where only shapes matter).
"""

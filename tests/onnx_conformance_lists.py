"""What hetrt claims from onnx's backend test suite, and what it explicitly does not.

``NODE_INCLUDE`` maps each ONNX op the parser converts to the name patterns of its node tests
(regular expressions searched in the test name, which ends in ``_cpu``). ``MODEL_INCLUDE`` names
the model-level cases (the nine ``light`` zoo models, the PyTorch-converted modules and the
PyTorch operator exports). ``EXCLUDE`` lists every pattern left out of an included family, each
with the reason; the conformance test and ``bench/onnx_conformance_counts.py`` both read these.
"""

from __future__ import annotations

NODE_INCLUDE: dict[str, list[str]] = {
    "Abs": [r"^test_abs_"],
    "Acos": [r"^test_acos_"],
    "Add": [r"^test_add_"],
    "And": [r"^test_and(\d|_bcast)"],
    "ArgMax": [r"^test_argmax_"],
    "ArgMin": [r"^test_argmin_"],
    "Asin": [r"^test_asin_"],
    "Atan": [r"^test_atan_"],
    "AveragePool": [r"^test_averagepool_"],
    "BatchNormalization": [r"^test_batchnorm_"],
    "Cast": [r"^test_cast_"],
    "CastLike": [r"^test_castlike_"],
    "Ceil": [r"^test_ceil_"],
    "Celu": [r"^test_celu_"],
    "Clip": [r"^test_clip_"],
    "Concat": [r"^test_concat_"],
    "Constant": [r"^test_constant_cpu$"],
    "ConstantOfShape": [r"^test_constantofshape_"],
    "Conv": [r"^test_conv_", r"^test_basic_conv_"],
    "DepthToSpace": [r"^test_depthtospace_"],
    "Einsum": [r"^test_einsum_"],
    "ConvTranspose": [r"^test_convtranspose_"],
    "Cos": [r"^test_cos_"],
    "Cosh": [r"^test_cosh_"],
    "Div": [r"^test_div_"],
    "Dropout": [r"^test_dropout_", r"^test_training_dropout"],
    "Elu": [r"^test_elu_"],
    "Equal": [r"^test_equal_"],
    "Erf": [r"^test_erf_"],
    "Exp": [r"^test_exp_"],
    "Expand": [r"^test_expand_"],
    "SpaceToDepth": [r"^test_spacetodepth"],
    "Flatten": [r"^test_flatten_"],
    "Floor": [r"^test_floor_"],
    "Gather": [r"^test_gather_(?!elements)"],
    "Gelu": [r"^test_gelu_"],
    "Gemm": [r"^test_gemm_"],
    "GRU": [r"^test_gru_"],
    "GlobalAveragePool": [r"^test_globalaveragepool_"],
    "GlobalLpPool": [r"^test_globallppool_"],
    "GlobalMaxPool": [r"^test_globalmaxpool_"],
    "Greater": [r"^test_greater_"],
    "HardSigmoid": [r"^test_hardsigmoid_"],
    "HardSwish": [r"^test_hardswish_"],
    "Identity": [r"^test_identity_"],
    "InstanceNormalization": [r"^test_instancenorm_"],
    "LRN": [r"^test_lrn_"],
    "LSTM": [r"^test_lstm_"],
    "LayerNormalization": [r"^test_layer_normalization_"],
    "LeakyRelu": [r"^test_leakyrelu_"],
    "Less": [r"^test_less_"],
    "Log": [r"^test_log_"],
    "LogSoftmax": [r"^test_logsoftmax_"],
    "LpPool": [r"^test_lppool_"],
    "MatMul": [r"^test_matmul_"],
    "Max": [r"^test_max_"],
    "MaxPool": [r"^test_maxpool_"],
    "Mean": [r"^test_mean_"],
    "Min": [r"^test_min_"],
    "Mish": [r"^test_mish_"],
    "Mul": [r"^test_mul_"],
    "Neg": [r"^test_neg_"],
    "Not": [r"^test_not_"],
    "Or": [r"^test_or(\d|_bcast)"],
    "PRelu": [r"^test_prelu_"],
    "Pad": [r"^test_constant_pad", r"^test_edge_pad", r"^test_reflect_pad", r"^test_wrap_pad"],
    "Pow": [r"^test_pow_"],
    "Range": [r"^test_range_"],
    "Reciprocal": [r"^test_reciprocal_"],
    "ReduceL1": [r"^test_reduce_l1_"],
    "ReduceL2": [r"^test_reduce_l2_"],
    "ReduceLogSum": [r"^test_reduce_log_sum_(?!exp)"],
    "ReduceLogSumExp": [r"^test_reduce_log_sum_exp_"],
    "ReduceMax": [r"^test_reduce_max_"],
    "ReduceMean": [r"^test_reduce_mean_"],
    "ReduceMin": [r"^test_reduce_min_"],
    "ReduceProd": [r"^test_reduce_prod_"],
    "ReduceSum": [r"^test_reduce_sum_(?!square)"],
    "ReduceSumSquare": [r"^test_reduce_sum_square_"],
    "Relu": [r"^test_relu_"],
    "Reshape": [r"^test_reshape_"],
    "Resize": [r"^test_resize_"],
    "RNN": [r"^test_simple_rnn_", r"^test_rnn_seq_length"],
    "Round": [r"^test_round_"],
    "Selu": [r"^test_selu_"],
    "Shape": [r"^test_shape_"],
    "Sigmoid": [r"^test_sigmoid_"],
    "Sign": [r"^test_sign_"],
    "Sin": [r"^test_sin_"],
    "Sinh": [r"^test_sinh_"],
    "Size": [r"^test_size_"],
    "Slice": [r"^test_slice_"],
    "Softmax": [r"^test_softmax_"],
    "Softplus": [r"^test_softplus_"],
    "Softsign": [r"^test_softsign_"],
    "Split": [r"^test_split_"],
    "Sqrt": [r"^test_sqrt_"],
    "Squeeze": [r"^test_squeeze_"],
    "Sub": [r"^test_sub_"],
    "Sum": [r"^test_sum_"],
    "Tan": [r"^test_tan_"],
    "Tanh": [r"^test_tanh_"],
    "ThresholdedRelu": [r"^test_thresholdedrelu_"],
    "Tile": [r"^test_tile_"],
    "Transpose": [r"^test_transpose_"],
    "Unsqueeze": [r"^test_unsqueeze_"],
    # Upsample exists only in opsets 7-9: such models are lifted to Resize by onnx's version converter.
    "Upsample": [r"^test_upsample_"],
    "Where": [r"^test_where_"],
    "Xor": [r"^test_xor(\d|_bcast)"],
}

# Model-level cases: category → patterns.
LIGHT_MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512"]
MODEL_INCLUDE: dict[str, list[str]] = {
    "real": [rf"^test_{m}_" for m in LIGHT_MODELS],
    "pytorch-converted": [
        r"^test_(AvgPool|BatchNorm|Conv|ConvTranspose|ELU|Embedding|GLU|LeakyReLU|Linear|LogSoftmax|MaxPool|PReLU|"
        r"PixelShuffle|ReLU|SELU|Sigmoid|Softmax|Softmin|Softplus|Softsign|Tanh|ConstantPad2d|ZeroPad2d|"
        r"ReflectionPad2d|ReplicationPad2d|softmax|log_softmax|PoissonNLLLLoss)",
    ],
    "pytorch-operator": [r"^test_operator_"],
    "simple": [r"^test_single_relu_model_", r"^test_sign_model_", r"^test_expand_shape_model"],
}

# (pattern, reason): tests of included families that hetrt does not claim.
EXCLUDE: list[tuple[str, str]] = [
    # element types hetrt does not hold (float32/float16 models; int8/uint8/int32/int64/bool tensors)
    (r"(float64|double|DOUBLE)", "float64 tensors: hetrt claims float32/float16 models"),
    (r"(bfloat16|BFLOAT16)", "bfloat16 tensors are not supported"),
    (r"(FLOAT8|FLOAT4|INT4|UINT4|INT2|UINT2|e4m3|e5m2)", "8/4/2-bit float and int types are not supported"),
    (r"_(u?int16|uint32|uint64)(_|$)", "int16/uint16/uint32/uint64 tensors are not supported"),
    (r"STRING|_string", "string tensors are not supported"),
    (r"^test_operator_add(_broadcast|_size1|constant)", "these PyTorch operator exports take float64 inputs"),
    (r"^test_arg(max|min)_.*select_last_index", "select_last_index=1 (the last of tied extremes) is refused "
                                                 "with an UnsupportedError"),
    (r"^test_einsum_", "every Einsum node test takes float64 inputs; tests/test_onnx_einsum.py runs the same "
                       "equations (and more) in float32 against numpy and ONNX Runtime"),
    # training-only features
    (r"^test_batchnorm_.*training_mode", "training-mode BatchNormalization (batch statistics)"),
    (r"^test_dropout_default_mask|^test_training_dropout", "Dropout in training mode or with its mask output"),
    (r"^test_layer_normalization_(?!.*_expanded)", "LayerNormalization tests read the Mean/InvStdDev outputs"),
    (r"^test_maxpool_with_argmax", "MaxPool's Indices output"),
    (r"^test_maxpool_2d_uint8", "pooling of uint8 tensors"),
    # resize features outside the IR
    (r"^test_resize_.*cubic", "cubic resize"),
    (r"^test_resize_tf_crop_and_resize", "tf_crop_and_resize coordinate mode"),
    (r"^test_resize_.*antialias", "antialiased resize"),
    (r"^test_resize_.*not_(larger|smaller)", "keep_aspect_ratio_policy other than stretch"),
    # reductions
    (r"^test_reduce_.*empty_set", "reductions over empty tensors"),
    (r"^test_reduce_(max|min)_bool_inputs", "max/min reductions of bool tensors"),
    # ops whose run-time form has no hetrt layer (fine when constant)
    (r"^test_(clip|elu|selu|leakyrelu|prelu|thresholdedrelu|shrink|relu)_.*expanded",
     "expanded function bodies use Where/Max on run-time tensors (no select layer)"),
    (r"^test_(blackman|hamming|hann)window", "window functions build Range from run-time values"),
    (r"^test_center_crop_pad", "CenterCropPad bodies divide run-time integer tensors"),
    (r"^test_identity_(sequence|opt)", "sequence and optional types"),
    (r"^test_split_to_sequence", "SplitToSequence (sequence types)"),
    (r"^test_(greater|less)_equal", "GreaterOrEqual/LessOrEqual are not claimed (NaN semantics differ from Not(Less))"),
    (r"^test_reduce_log_sum_exp_", "onnx's ReduceLogSumExp test data is float64"),
    (r"^test_range_.*_expanded", "the expanded Range body is a Loop"),
    # ill-conditioned model data (covered instead by test_onnx_conformance.test_light_squeezenet_logits)
    (r"^test_squeezenet_", "light squeezenet's constant weights give ~9.5e9 logits whose softmax turns on one "
                           "float32 ulp (1024) between channels: the expected output depends on the summation order "
                           "of the machine's BLAS, not on the model"),
]

"""The subset of Caffe's protobuf schema hetrt reads, built at import time (no protoc, no generated code).

Message and field names and numbers follow the published ``caffe.proto`` of BVLC Caffe; only the
messages and fields hetrt needs are declared, plus the training-time fields that deploy files
commonly carry (``param``, fillers, ``include``/``exclude``, ``engine``) so that those parse.
The V1 ``layers`` field (number 2 of NetParameter) is declared as raw bytes only to detect and
reject the pre-2015 format with a clear message. Messages live in a private descriptor pool.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL, "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE, "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "int64": _F.TYPE_INT64,
}
PACKAGE = "caffe"

ENGINE = ("Engine", [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)])

# message -> (nested enums, fields). A field is (name, number, type, label, default); type is a
# scalar name, a message name or "enum:Name"; label "?" optional, "*" repeated, "*p" packed repeated.
MESSAGES: dict[str, tuple[list, list[tuple[str, int, str, str, Any]]]] = {
    "BlobShape": ([], [("dim", 1, "int64", "*p", None)]),
    "BlobProto": ([], [
        ("shape", 7, "BlobShape", "?", None), ("data", 5, "float", "*p", None), ("diff", 6, "float", "*p", None),
        ("double_data", 8, "double", "*p", None), ("double_diff", 9, "double", "*p", None),
        ("num", 1, "int32", "?", 0), ("channels", 2, "int32", "?", 0), ("height", 3, "int32", "?", 0),
        ("width", 4, "int32", "?", 0)]),
    "FillerParameter": ([("VarianceNorm", [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)])], [
        ("type", 1, "string", "?", "constant"), ("value", 2, "float", "?", 0.0), ("min", 3, "float", "?", 0.0),
        ("max", 4, "float", "?", 1.0), ("mean", 5, "float", "?", 0.0), ("std", 6, "float", "?", 1.0),
        ("sparse", 7, "int32", "?", -1), ("variance_norm", 8, "enum:VarianceNorm", "?", "FAN_IN")]),
    "NetState": ([], [("phase", 1, "enum:Phase", "?", "TEST"), ("level", 2, "int32", "?", 0),
                      ("stage", 3, "string", "*", None)]),
    "NetStateRule": ([], [("phase", 1, "enum:Phase", "?", None), ("min_level", 2, "int32", "?", None),
                          ("max_level", 3, "int32", "?", None), ("stage", 4, "string", "*", None),
                          ("not_stage", 5, "string", "*", None)]),
    "ParamSpec": ([("DimCheckMode", [("STRICT", 0), ("PERMISSIVE", 1)])], [
        ("name", 1, "string", "?", None), ("share_mode", 2, "enum:DimCheckMode", "?", None),
        ("lr_mult", 3, "float", "?", 1.0), ("decay_mult", 4, "float", "?", 1.0)]),
    "NetParameter": ([], [
        ("name", 1, "string", "?", None), ("input", 3, "string", "*", None),
        ("input_shape", 8, "BlobShape", "*", None), ("input_dim", 4, "int32", "*", None),
        ("force_backward", 5, "bool", "?", False), ("state", 6, "NetState", "?", None),
        ("debug_info", 7, "bool", "?", False), ("layer", 100, "LayerParameter", "*", None),
        ("layers", 2, "bytes", "*", None)]),
    "TransformationParameter": ([], [
        ("scale", 1, "float", "?", 1.0), ("mirror", 2, "bool", "?", False), ("crop_size", 3, "uint32", "?", 0),
        ("mean_file", 4, "string", "?", None), ("mean_value", 5, "float", "*", None),
        ("force_color", 6, "bool", "?", False), ("force_gray", 7, "bool", "?", False)]),
    "ConvolutionParameter": ([ENGINE], [
        ("num_output", 1, "uint32", "?", None), ("bias_term", 2, "bool", "?", True),
        ("pad", 3, "uint32", "*", None), ("kernel_size", 4, "uint32", "*", None),
        ("stride", 6, "uint32", "*", None), ("dilation", 18, "uint32", "*", None),
        ("pad_h", 9, "uint32", "?", 0), ("pad_w", 10, "uint32", "?", 0), ("kernel_h", 11, "uint32", "?", None),
        ("kernel_w", 12, "uint32", "?", None), ("stride_h", 13, "uint32", "?", None),
        ("stride_w", 14, "uint32", "?", None), ("group", 5, "uint32", "?", 1),
        ("weight_filler", 7, "FillerParameter", "?", None), ("bias_filler", 8, "FillerParameter", "?", None),
        ("engine", 15, "enum:Engine", "?", "DEFAULT"), ("axis", 16, "int32", "?", 1),
        ("force_nd_im2col", 17, "bool", "?", False)]),
    "PoolingParameter": ([("PoolMethod", [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]), ENGINE,
                          ("RoundMode", [("CEIL", 0), ("FLOOR", 1)])], [
        ("pool", 1, "enum:PoolMethod", "?", "MAX"), ("pad", 4, "uint32", "?", 0), ("pad_h", 9, "uint32", "?", 0),
        ("pad_w", 10, "uint32", "?", 0), ("kernel_size", 2, "uint32", "?", None),
        ("kernel_h", 5, "uint32", "?", None), ("kernel_w", 6, "uint32", "?", None),
        ("stride", 3, "uint32", "?", 1), ("stride_h", 7, "uint32", "?", None), ("stride_w", 8, "uint32", "?", None),
        ("engine", 11, "enum:Engine", "?", "DEFAULT"), ("global_pooling", 12, "bool", "?", False),
        ("round_mode", 13, "enum:RoundMode", "?", "CEIL")]),
    "InnerProductParameter": ([], [
        ("num_output", 1, "uint32", "?", None), ("bias_term", 2, "bool", "?", True),
        ("weight_filler", 3, "FillerParameter", "?", None), ("bias_filler", 4, "FillerParameter", "?", None),
        ("axis", 5, "int32", "?", 1), ("transpose", 6, "bool", "?", False)]),
    "LRNParameter": ([("NormRegion", [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)]), ENGINE], [
        ("local_size", 1, "uint32", "?", 5), ("alpha", 2, "float", "?", 1.0), ("beta", 3, "float", "?", 0.75),
        ("norm_region", 4, "enum:NormRegion", "?", "ACROSS_CHANNELS"), ("k", 5, "float", "?", 1.0),
        ("engine", 6, "enum:Engine", "?", "DEFAULT")]),
    "BatchNormParameter": ([], [
        ("use_global_stats", 1, "bool", "?", None), ("moving_average_fraction", 2, "float", "?", 0.999),
        ("eps", 3, "float", "?", 1e-5)]),
    "ScaleParameter": ([], [
        ("axis", 1, "int32", "?", 1), ("num_axes", 2, "int32", "?", 1), ("filler", 3, "FillerParameter", "?", None),
        ("bias_term", 4, "bool", "?", False), ("bias_filler", 5, "FillerParameter", "?", None)]),
    "EltwiseParameter": ([("EltwiseOp", [("PROD", 0), ("SUM", 1), ("MAX", 2)])], [
        ("operation", 1, "enum:EltwiseOp", "?", "SUM"), ("coeff", 2, "float", "*", None),
        ("stable_prod_grad", 3, "bool", "?", True)]),
    "ConcatParameter": ([], [("axis", 2, "int32", "?", 1), ("concat_dim", 1, "uint32", "?", 1)]),
    "SliceParameter": ([], [("axis", 3, "int32", "?", 1), ("slice_point", 2, "uint32", "*", None),
                            ("slice_dim", 1, "uint32", "?", 1)]),
    "SoftmaxParameter": ([ENGINE], [("engine", 1, "enum:Engine", "?", "DEFAULT"), ("axis", 2, "int32", "?", 1)]),
    "DropoutParameter": ([], [("dropout_ratio", 1, "float", "?", 0.5)]),
    "FlattenParameter": ([], [("axis", 1, "int32", "?", 1), ("end_axis", 2, "int32", "?", -1)]),
    "ReshapeParameter": ([], [("shape", 1, "BlobShape", "?", None), ("axis", 2, "int32", "?", 0),
                              ("num_axes", 3, "int32", "?", -1)]),
    "InputParameter": ([], [("shape", 1, "BlobShape", "*", None)]),
    "PowerParameter": ([], [("power", 1, "float", "?", 1.0), ("scale", 2, "float", "?", 1.0),
                            ("shift", 3, "float", "?", 0.0)]),
    "PReLUParameter": ([], [("filler", 1, "FillerParameter", "?", None), ("channel_shared", 2, "bool", "?", False)]),
    "ReLUParameter": ([ENGINE], [("negative_slope", 1, "float", "?", 0.0),
                                 ("engine", 2, "enum:Engine", "?", "DEFAULT")]),
    "SigmoidParameter": ([ENGINE], [("engine", 1, "enum:Engine", "?", "DEFAULT")]),
    "TanHParameter": ([ENGINE], [("engine", 1, "enum:Engine", "?", "DEFAULT")]),
    "LayerParameter": ([], [
        ("name", 1, "string", "?", None), ("type", 2, "string", "?", None), ("bottom", 3, "string", "*", None),
        ("top", 4, "string", "*", None), ("phase", 10, "enum:Phase", "?", None),
        ("loss_weight", 5, "float", "*", None), ("param", 6, "ParamSpec", "*", None),
        ("blobs", 7, "BlobProto", "*", None), ("propagate_down", 11, "bool", "*", None),
        ("include", 8, "NetStateRule", "*", None), ("exclude", 9, "NetStateRule", "*", None),
        ("transform_param", 100, "TransformationParameter", "?", None),
        ("batch_norm_param", 139, "BatchNormParameter", "?", None),
        ("concat_param", 104, "ConcatParameter", "?", None),
        ("convolution_param", 106, "ConvolutionParameter", "?", None),
        ("dropout_param", 108, "DropoutParameter", "?", None),
        ("eltwise_param", 110, "EltwiseParameter", "?", None),
        ("flatten_param", 135, "FlattenParameter", "?", None),
        ("inner_product_param", 117, "InnerProductParameter", "?", None),
        ("input_param", 143, "InputParameter", "?", None),
        ("lrn_param", 118, "LRNParameter", "?", None),
        ("pooling_param", 121, "PoolingParameter", "?", None),
        ("power_param", 122, "PowerParameter", "?", None),
        ("prelu_param", 131, "PReLUParameter", "?", None),
        ("relu_param", 123, "ReLUParameter", "?", None),
        ("reshape_param", 133, "ReshapeParameter", "?", None),
        ("scale_param", 142, "ScaleParameter", "?", None),
        ("sigmoid_param", 124, "SigmoidParameter", "?", None),
        ("softmax_param", 125, "SoftmaxParameter", "?", None),
        ("slice_param", 126, "SliceParameter", "?", None),
        ("tanh_param", 127, "TanHParameter", "?", None)]),
}
FILE_ENUMS = [("Phase", [("TRAIN", 0), ("TEST", 1)])]


def _default_text(kind: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _add_field(msg: descriptor_pb2.DescriptorProto, spec: tuple, nested_enums: set[str]) -> None:
    name, number, kind, label, default = spec
    f = msg.field.add(name=name, number=number)
    f.label = _F.LABEL_REPEATED if label.startswith("*") else _F.LABEL_OPTIONAL
    if label == "*p":
        f.options.packed = True
    if kind in _SCALARS:
        f.type = _SCALARS[kind]
    elif kind.startswith("enum:"):
        enum = kind[5:]
        f.type = _F.TYPE_ENUM
        f.type_name = f".{PACKAGE}.{msg.name}.{enum}" if enum in nested_enums else f".{PACKAGE}.{enum}"
    else:
        f.type = _F.TYPE_MESSAGE
        f.type_name = f".{PACKAGE}.{kind}"
    if default is not None and f.label != _F.LABEL_REPEATED and f.type != _F.TYPE_MESSAGE:
        f.default_value = _default_text(kind, default)


def _file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="hetrt_caffe_subset.proto", package=PACKAGE, syntax="proto2")
    for name, values in FILE_ENUMS:
        e = fdp.enum_type.add(name=name)
        for vname, number in values:
            e.value.add(name=vname, number=number)
    for name, (enums, fields) in MESSAGES.items():
        msg = fdp.message_type.add(name=name)
        for ename, values in enums:
            e = msg.enum_type.add(name=ename)
            for vname, number in values:
                e.value.add(name=vname, number=number)
        nested = {e[0] for e in enums}
        for spec in fields:
            _add_field(msg, spec, nested)
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def message_class(name: str) -> type:
    """The generated-at-import message class ``caffe.<name>``."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
LayerParameter = message_class("LayerParameter")
BlobProto = message_class("BlobProto")
BlobShape = message_class("BlobShape")

__all__ = ["BlobProto", "BlobShape", "LayerParameter", "NetParameter", "message_class"]

"""Tensor element types, named as TensorRT names them, mapped to numpy."""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class DataType(StrEnum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    UINT8 = "uint8"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT, DataType.HALF)

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DataType:
        name = np.dtype(dtype).name
        for member in cls:
            if member.value == name:
                return member
        raise ValueError(f"numpy dtype {name} has no hetrt DataType")


class Precision(StrEnum):
    """Build precisions (BuilderConfig flags); the compute type of a layer."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    @property
    def activation_dtype(self) -> DataType:
        return {Precision.FP32: DataType.FLOAT, Precision.FP16: DataType.HALF,
                Precision.INT8: DataType.INT8}[self]

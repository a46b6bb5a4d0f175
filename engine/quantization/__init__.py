"""INT8 quantization: calibrators and their cache, explicit Q/DQ folding, scales and the INT8
layer assignment the builder uses. The integer arithmetic itself is defined in ``scales`` and
executed exactly by ``backends.reference.int8``."""

from .cache import CalibrationCache, network_fingerprint
from .calibrator import (
    CALIBRATORS,
    Calibrator,
    CalibratorBase,
    EntropyCalibrator,
    MinMaxCalibrator,
    PercentileCalibrator,
    make_calibrator,
)

__all__ = ["CALIBRATORS", "CalibrationCache", "Calibrator", "CalibratorBase", "EntropyCalibrator",
           "MinMaxCalibrator", "PercentileCalibrator", "make_calibrator", "network_fingerprint"]

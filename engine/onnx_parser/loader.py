"""Loading and checking an ONNX model before conversion: file, external data, opset, validity."""

from __future__ import annotations

import faulthandler
import logging
import os
import warnings
from pathlib import Path

import onnx
import onnx.shape_inference
from onnx import external_data_helper, version_converter

from engine.ir.errors import ParserError, UnsupportedError

from .external_data import load_external_data

log = logging.getLogger("hetrt.onnx_parser")

MIN_OPSET = 11
MAX_OPSET = 21
# Newer opsets are accepted too: from opset 22 to 28 every op hetrt converts changed its allowed
# element types only (bfloat16, float8/float4/int4 and the like), never its attributes or
# semantics, so the opset-21 converters apply (tests/test_onnx_parser.py checks this against the
# installed onnx schemas).
MAX_ACCEPTED_OPSET = 28
# Models older than MIN_OPSET are converted to this opset with onnx's version converter.
CONVERT_TO_OPSET = 13


def load_model(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, str]:
    """The model proto (external data loaded) and a display name for messages."""
    if isinstance(model, onnx.ModelProto):
        for init in model.graph.initializer:
            if external_data_helper.uses_external_data(init) and not init.HasField("raw_data"):
                raise ParserError(f"initializer '{init.name}' keeps its data in an external file that was not "
                                  f"loaded; pass the model's path (or load it with load_external_data=True)")
        return model, model.graph.name or "model"
    path = Path(model)
    if not path.is_file():
        raise ParserError(f"ONNX file '{path}' does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends: all mean "not an ONNX file"
        raise ParserError(f"'{path}' is not a readable ONNX model: {type(e).__name__}: {e}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ParserError(f"'{path}' is not an ONNX model (no graph)")
    load_external_data(proto, path)  # contained in the model's folder, sizes checked (external_data.py)
    return proto, str(path)


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1 if not model.opset_import else 0


def check_model(model: onnx.ModelProto, display: str) -> None:
    """onnx.checker with the full check (types and shapes inferred strictly, as ONNX Runtime checks a
    model: a bool initializer where a float is required fails here); its message goes into a
    ParserError.

    onnx's shape inference is C++ built with assertions: some malformed models (a pooling window
    larger than its input feeding a Slice) abort the whole process instead of raising. The full check
    therefore runs in a forked child where the platform has fork: a crash there is a ParserError here.
    """
    if not ISOLATE_CHECKER or not hasattr(os, "fork"):
        error = _full_check(model)
    else:
        error = _full_check_in_child(model, display)
    if error is not None:
        raise ParserError(f"model '{display}' is not a valid ONNX model: {error}")


ISOLATE_CHECKER = True


def _full_check(model: onnx.ModelProto) -> str | None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
    except ValueError as e:  # e.g. > 2 GiB protos: the checker wants a path; the structure walk still follows
        log.debug("onnx checker skipped: %s", e)
    return None


def _full_check_in_child(model: onnx.ModelProto, display: str) -> str | None:
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # JAX warns about fork in a multithreaded process; the child runs only onnx's C++ checker and
        # leaves with os._exit, taking no lock another thread could hold (glibc resets malloc's at fork)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # child: check, report the first line of an error, exit without cleanup
        code = 0
        try:
            os.close(read_fd)
            faulthandler.disable()  # a crash is reported by the parent, not dumped by the child
            error = _full_check(model)
            if error is not None:
                os.write(write_fd, error.encode("utf-8", "replace")[:4000])
                code = 1
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        message = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"onnx's checker crashed (signal {sig}) on it; the model is malformed"
    code = os.WEXITSTATUS(status)
    if code == 1:
        return message or "invalid model"
    if code != 0:
        return "onnx's checker failed on it"
    return None


def normalize_opset(model: onnx.ModelProto, display: str) -> tuple[onnx.ModelProto, int]:
    """Accept opsets MIN..MAX; lift older models with onnx's version converter (with a warning).

    Returns the model to convert and its opset; ``default_opset`` of the argument still tells the
    original opset, which a few converters need (PRelu's slope was per channel before opset 7).
    """
    opset = default_opset(model)
    if opset == 0:
        raise ParserError(f"model '{display}' imports no version of the default ONNX domain")
    if MIN_OPSET <= opset <= MAX_ACCEPTED_OPSET:
        return model, opset
    if opset > MAX_ACCEPTED_OPSET:
        raise UnsupportedError(f"model '{display}' uses opset {opset}; hetrt supports opsets "
                               f"{MIN_OPSET}-{MAX_OPSET} (and {MAX_OPSET + 1}-{MAX_ACCEPTED_OPSET}, whose "
                               f"changes to supported ops are element types only)")
    try:
        converted = version_converter.convert_version(model, CONVERT_TO_OPSET)
    except Exception as e:  # the converter raises RuntimeError/ValueError/ConvertError variants
        raise UnsupportedError(f"model '{display}' uses opset {opset} (hetrt supports {MIN_OPSET}-{MAX_OPSET}) "
                               f"and onnx's version converter could not lift it to {CONVERT_TO_OPSET}: {e}") from None
    log.warning("model '%s' uses opset %d; converted to opset %d with onnx.version_converter",
                display, opset, CONVERT_TO_OPSET)
    return converted, CONVERT_TO_OPSET

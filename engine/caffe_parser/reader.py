"""Reading a deploy .prototxt (protobuf text) and a .caffemodel (protobuf binary) into messages.

Every failure is one ``ParserError`` naming the file and the line (text) or what is wrong (binary).
The pre-2015 "V1" format (``layers { ... }`` with enum types) is recognised and rejected by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from google.protobuf import message as pb_message
from google.protobuf import text_format

from engine.caffe_parser.schema import NetParameter
from engine.ir.errors import ParserError

Source = str | os.PathLike | bytes


def _looks_like_text(spec: str) -> bool:
    return "\n" in spec or "{" in spec


def load_text(prototxt: Source) -> tuple[str, str]:
    """(text, display name) of a prototxt given as a path or as the text itself."""
    if isinstance(prototxt, bytes):
        return prototxt.decode("utf-8", errors="replace"), "<prototxt>"
    spec = os.fspath(prototxt)
    if isinstance(prototxt, str) and _looks_like_text(spec) and not os.path.exists(spec):
        return spec, "<prototxt>"
    try:
        return Path(spec).read_text(encoding="utf-8", errors="replace"), spec
    except OSError as e:
        raise ParserError(f"cannot read prototxt {spec}: {e.strerror or e}") from None


def parse_prototxt(text: str, display: str) -> tuple[NetParameter, str | None]:
    """(net, None) when the text parses against the schema. Otherwise (net read leniently, the error):
    unknown fields usually belong to layer types hetrt does not convert, and the caller reports
    every such type at once before falling back to the error itself."""
    if re.search(r"^\s*layers\s*\{", text, re.MULTILINE):
        raise ParserError(f"{display}: uses the V1 'layers {{ ... }}' format (Caffe before 2015); upgrade it with "
                          f"Caffe's upgrade_net_proto_text tool to 'layer {{ ... }}'")
    net = NetParameter()
    try:
        text_format.Parse(text, net)
        return net, None
    except text_format.ParseError as e:
        strict = f"{display}: line {_where(e)}"
    loose = NetParameter()
    try:
        text_format.Parse(text, loose, allow_unknown_field=True)
    except text_format.ParseError:
        raise ParserError(strict) from None
    return loose, strict


def _where(error: text_format.ParseError) -> str:
    """'12:5: message' from protobuf's '12:5 : message'."""
    text = str(error)
    m = re.match(r"^(\d+):(\d+)\s*:\s*(.*)$", text, re.DOTALL)
    if m:
        return f"{m.group(1)}, column {m.group(2)}: {m.group(3)}"
    return text


def load_caffemodel(weights: Source) -> tuple[NetParameter, str]:
    """The binary NetParameter of a .caffemodel given as a path or as bytes."""
    if isinstance(weights, bytes):
        data, display = weights, "<caffemodel>"
    else:
        display = os.fspath(weights)
        try:
            data = Path(display).read_bytes()
        except OSError as e:
            raise ParserError(f"cannot read caffemodel {display}: {e.strerror or e}") from None
    net = NetParameter()
    try:
        net.ParseFromString(data)
    except (pb_message.DecodeError, ValueError) as e:
        raise ParserError(f"{display}: not a valid caffemodel (binary NetParameter): {e}") from None
    if not net.layer and net.layers:
        raise ParserError(f"{display}: uses the V1 'layers' format (Caffe before 2015); upgrade it with Caffe's "
                          f"upgrade_net_proto_binary tool")
    if not net.layer:
        raise ParserError(f"{display}: holds no layers (empty or not a caffemodel)")
    return net, display


def included_in_test_phase(layer) -> bool:
    """Caffe's NetStateRule for the TEST phase (deploy): include/exclude rules by phase."""
    test = 1

    def matches(rule) -> bool:
        return not rule.HasField("phase") or rule.phase == test

    if layer.HasField("phase") and layer.phase != test:
        return False
    if layer.include:
        return any(matches(r) for r in layer.include)
    return not any(matches(r) for r in layer.exclude)

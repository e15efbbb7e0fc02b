"""An ONNX file's graph without its weights, read without touching the weights' pages.

What autoinfer learns from a model before it runs it (inputs, outputs, operators,
shapes, a FLOP estimate, whether shape inference crashes on it) needs the graph and
the small constants, never the data of the large initializers. Reading and parsing a
400 MB file to drop that data again took longer than the runtime's own load, so
:func:`read_skeleton` walks the protobuf wire format over a memory map instead and
copies everything except the data fields of tensors larger than ``keep_bytes``
(their names, dims, types and external-data records stay). The pages holding the
weights are never read.

Where the file does not walk as a well-formed protobuf, :func:`read_skeleton` returns
None: the caller reads and parses the whole file, which gives the precise error.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

KEEP_BYTES = 1 << 16  # tensors up to this size keep their data (a Reshape's shape, ...)

# field numbers of onnx.proto
_MODEL_GRAPH = 7
_MODEL_FUNCTIONS = 25
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 5, 6, 10, 11
# TensorProto's data: float_data, int32_data, string_data, int64_data, raw_data, double_data,
# uint64_data (string tensors keep theirs: shape inference may read them, and they are rare)
_TENSOR_DATA = frozenset({4, 5, 7, 9, 10, 11})

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


class _Malformed(Exception):
    pass


# A rule, per message type: for a length-delimited field number, the rule to walk that field
# with, or _DROP to leave it out; a field it does not name, or one no longer than keep_bytes
# (nothing in it is large), is copied as it is.
Rule = dict[int, "Rule | _Drop"]


def read_skeleton(path: Path, keep_bytes: int = KEEP_BYTES) -> bytes | None:
    """The serialized model at ``path`` without the data of its tensors over
    ``keep_bytes``; None when the file does not walk as a protobuf message."""
    with open(path, "rb") as f:  # an error opening it is the caller's to report
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # not a regular file, or no memory map here
            return None
    try:
        view = memoryview(mm)
        try:
            out: list[bytes] = []
            _Walker(view, keep_bytes).message(0, size, out, _MODEL)
            return b"".join(out)
        except (_Malformed, IndexError, ValueError):
            return None
        finally:
            view.release()
    finally:
        mm.close()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Walker:
    """Copies a message field by field, rewriting the sub-messages its rule names."""

    def __init__(self, buf: memoryview, keep_bytes: int) -> None:
        self.buf = buf
        self.keep = keep_bytes

    def _read_varint(self, pos: int, end: int) -> tuple[int, int]:
        buf = self.buf
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Malformed
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value, pos
            shift += 7

    def message(self, pos: int, end: int, out: list[bytes], rule: Rule) -> None:
        """Copy the fields of the message in ``buf[pos:end]`` to ``out``: a length-delimited
        field longer than ``keep`` that ``rule`` names is walked with its rule, or left out
        (``_DROP``); the rest are copied as they are, in runs of consecutive fields."""
        buf = self.buf
        keep = self.keep
        varint = self._read_varint
        run = pos  # the start of the fields not yet copied
        while pos < end:
            start = pos
            tag = buf[pos]
            if tag < 0x80:  # one-byte tags: every field of onnx.proto
                pos += 1
            else:
                tag, pos = varint(pos, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise _Malformed
            if wire == _WIRE_LEN:
                tag_end = pos
                length, body = varint(pos, end)
                pos = body + length
                if pos > end:
                    raise _Malformed
                if length <= keep:
                    continue
                sub = rule.get(number)
                if sub is None:
                    continue
                if run < start:
                    out.append(bytes(buf[run:start]))
                run = pos
                if isinstance(sub, _Drop):
                    continue
                inner: list[bytes] = []
                self.message(body, pos, inner, sub)
                payload = b"".join(inner)
                out.append(bytes(buf[start:tag_end]))
                out.append(_varint(len(payload)))
                out.append(payload)
            elif wire == _WIRE_VARINT:
                _, pos = varint(pos, end)
            elif wire == _WIRE_I64:
                pos += 8
            elif wire == _WIRE_I32:
                pos += 4
            else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
                raise _Malformed
            if pos > end:
                raise _Malformed
        if run < end:
            out.append(bytes(buf[run:end]))


class _Drop:
    pass


_DROP = _Drop()


# the messages on the way to large tensors, in onnx.proto's field numbers
_TENSOR: Rule = {n: _DROP for n in _TENSOR_DATA}
_GRAPH: Rule = {}
_ATTRIBUTE: Rule = {_ATTR_T: _TENSOR, _ATTR_TENSORS: _TENSOR, _ATTR_G: _GRAPH, _ATTR_GRAPHS: _GRAPH}
_NODE: Rule = {_NODE_ATTRIBUTE: _ATTRIBUTE}
_GRAPH.update({_GRAPH_INITIALIZER: _TENSOR, _GRAPH_NODE: _NODE})
_MODEL: Rule = {_MODEL_GRAPH: _GRAPH, _MODEL_FUNCTIONS: {_FUNCTION_NODE: _NODE}}

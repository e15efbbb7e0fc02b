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
from collections.abc import Callable
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


# a rule answers, for a length-delimited field (number, length) of the message it walks:
# the rule to walk that field with, _DROP to leave it out, or None to copy it as it is
Rule = Callable[["_Walker", int, int], object]


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
            _Walker(view, keep_bytes).message(0, size, out, _model_field)
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
        field whose ``rule(self, number, length)`` answers a rule is walked with that rule;
        one it answers ``_DROP`` for is left out; the rest are copied as they are."""
        buf = self.buf
        while pos < end:
            start = pos
            tag, pos = self._read_varint(pos, end)
            tag_end = pos
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise _Malformed
            if wire == _WIRE_VARINT:
                _, pos = self._read_varint(pos, end)
            elif wire == _WIRE_I64:
                pos += 8
            elif wire == _WIRE_I32:
                pos += 4
            elif wire == _WIRE_LEN:
                length, body = self._read_varint(pos, end)
                pos = body + length
                if pos > end:
                    raise _Malformed
                sub = rule(self, number, length)
                if sub is _DROP:
                    continue
                if sub is not None:
                    inner: list[bytes] = []
                    self.message(body, pos, inner, sub)  # type: ignore[arg-type]
                    payload = b"".join(inner)
                    out.append(bytes(buf[start:tag_end]))
                    out.append(_varint(len(payload)))
                    out.append(payload)
                    continue
            else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
                raise _Malformed
            if pos > end:
                raise _Malformed
            out.append(bytes(buf[start:pos]))


class _Drop:
    pass


_DROP = _Drop()


def _model_field(w: _Walker, number: int, length: int) -> object:
    if number == _MODEL_GRAPH:
        return _graph_field
    if number == _MODEL_FUNCTIONS and length > w.keep:
        return _function_field
    return None


def _function_field(w: _Walker, number: int, length: int) -> object:
    return _node_field if number == _FUNCTION_NODE and length > w.keep else None


def _graph_field(w: _Walker, number: int, length: int) -> object:
    if length <= w.keep:
        return None  # nothing in it is large: copied whole
    if number == _GRAPH_INITIALIZER:
        return _tensor_field
    if number == _GRAPH_NODE:
        return _node_field
    return None


def _node_field(w: _Walker, number: int, length: int) -> object:
    return _attribute_field if number == _NODE_ATTRIBUTE and length > w.keep else None


def _attribute_field(w: _Walker, number: int, length: int) -> object:
    if length <= w.keep:
        return None
    if number in (_ATTR_T, _ATTR_TENSORS):
        return _tensor_field
    if number in (_ATTR_G, _ATTR_GRAPHS):
        return _graph_field
    return None


def _tensor_field(w: _Walker, number: int, length: int) -> object:
    return _DROP if number in _TENSOR_DATA and length > w.keep else None

"""A model's bytes with its nodes replaced, at the protobuf wire level: the weights are never parsed.

The per-layer check holds a file's graph without its large weights (:func:`..layers.scopes.load_source`
clears them) and hands ONNX Runtime the file's own bytes. Appending a message adds nodes and outputs
(protobuf merges repeated fields by concatenation), but a rewritten graph (the teacher-forced one of
:mod:`..layers.teacher`, whose nodes read other values) must *replace* the nodes. :func:`with_nodes` copies
the file's bytes field by field, dropping the graph's ``node`` entries and writing the new ones instead:
one copy of the file, no parse of its initializers.

Wire format: each field is a varint key ``(number << 3) | wire_type``, then a varint (type 0), 8 bytes
(type 1), a varint length and that many bytes (type 2) or 4 bytes (type 5). ``ModelProto.graph`` is field 7,
``GraphProto.node`` field 1, ``.input`` field 11 and ``.output`` field 12 (onnx.proto).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

from ..errors import OnnxFileError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["with_nodes"]

_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INPUT, _GRAPH_OUTPUT = 1, 11, 12


def with_nodes(data: bytes, nodes: Iterable["onnx.NodeProto"], inputs: Iterable["onnx.ValueInfoProto"] = (),
               outputs: Iterable["onnx.ValueInfoProto"] = (), *, keep_outputs: bool = True) -> bytes:
    """``data`` (a serialized ``ModelProto``) with its graph's nodes replaced by ``nodes``, and ``inputs`` and
    ``outputs`` appended to the graph's (``keep_outputs=False``: ``outputs`` replace the graph's, which
    ``nodes`` may no longer compute); every other field, the initializers among them, copied as it is."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    found = False
    for number, wire, start, body, end in _fields(view):
        if number != _MODEL_GRAPH or wire != 2:
            parts.append(view[start:end])
            continue
        found = True
        graph: list[bytes | memoryview] = [view[s:e] for n, _, s, _, e in _fields(view[body:end], offset=body)
                                           if n != _GRAPH_NODE and (keep_outputs or n != _GRAPH_OUTPUT)]
        graph += [_field(_GRAPH_NODE, n.SerializeToString()) for n in nodes]
        graph += [_field(_GRAPH_INPUT, v.SerializeToString()) for v in inputs]
        graph += [_field(_GRAPH_OUTPUT, v.SerializeToString()) for v in outputs]
        payload = b"".join(graph)
        parts.append(_key(_MODEL_GRAPH, 2) + _varint(len(payload)) + payload)
    if not found:
        raise OnnxFileError("the model has no graph")
    return b"".join(parts)


def _fields(view: memoryview, offset: int = 0) -> Iterator[tuple[int, int, int, int, int]]:
    """``(number, wire type, start, payload start, end)`` of each field of the message in ``view``, the
    positions plus ``offset`` (where ``view`` starts in the bytes it was cut from)."""
    pos, size = 0, len(view)
    while pos < size:
        start = pos
        key, pos = _read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(view, pos)
            body = pos
        elif wire == 1:
            body, pos = pos, pos + 8
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            body, pos = pos, pos + length
        elif wire == 5:
            body, pos = pos, pos + 4
        else:
            raise OnnxFileError(f"not a readable ONNX file: protobuf wire type {wire} at byte {offset + start}")
        if pos > size:
            raise OnnxFileError(f"not a readable ONNX file: a field runs past the end at byte {offset + start}")
        yield number, wire, offset + start, offset + body, offset + pos


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view):
            raise OnnxFileError("not a readable ONNX file: it ends inside a varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload

"""ONNX subgraphs: a set of a file's nodes cut out as a model of its own.

:func:`extract_nodes` keeps exactly the nodes it is given (plus the ``Constant`` nodes they
read), declares every value they read from outside as a graph input, the values asked for
as graph outputs, and copies only the initializers those nodes use. Initializers stored as
external data are read for those nodes alone (``ext_dir``), so cutting one layer out of a
large file never loads the rest of its weights; the cut holds its weights inline.

A value the nodes read is one of three things, and the cut keeps them apart: an initializer
of the file (copied as an initializer, never declared as an input), the output of a node
outside the set (a graph input of the cut), or the output of a node inside it. Values read
by the bodies of ``If``/``Loop``/``Scan`` nodes from the enclosing graph count as read by
that node.

Why not ``onnx.utils.Extractor``: it runs shape inference on the whole model (weights
included) and picks the nodes by reachability between value names, so a scope's nodes
cannot be asked for as such and a shape computation outside the scope comes along; here
the nodes are chosen by their torch scope (:class:`~..layers.scopes.GraphScopes`) and the
cut holds those and no others. onnx is imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..errors import OnnxFileError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = ["all_values", "extract_nodes", "live_nodes", "node_reads", "range_boundary"]


class GraphPart:
    """What a piece of a file cut out as its own model (``self.proto``) says of itself."""

    proto: "onnx.ModelProto"

    @property
    def nodes(self) -> int:
        return len(self.proto.graph.node)

    @property
    def ops(self) -> tuple[str, ...]:
        """Its op types, in first-seen order."""
        return tuple(dict.fromkeys(n.op_type for n in self.proto.graph.node))


def node_reads(node: Any) -> list[str]:
    """The values ``node`` reads: its inputs, and what its subgraphs read from the enclosing graph."""
    reads = [v for v in node.input if v]
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else []
        graphs += list(attr.graphs)
        for g in graphs:
            inner = {i.name for i in g.input} | {t.name for t in g.initializer}
            for sub in g.node:
                inner.update(o for o in sub.output if o)
            for sub in g.node:
                reads.extend(v for v in node_reads(sub) if v not in inner)
    return list(dict.fromkeys(reads))


def live_nodes(nodes: Sequence[Any], indices: Iterable[int], outputs: Iterable[str]) -> list[int]:
    """The indices among ``indices`` whose results reach ``outputs`` (a backward walk inside the set), sorted."""
    chosen = sorted(set(indices))
    producer = {v: i for i in chosen for v in nodes[i].output if v}
    wanted = [v for v in outputs if v in producer]
    live: set[int] = set()
    while wanted:
        i = producer.get(wanted.pop())
        if i is None or i in live:
            continue
        live.add(i)
        wanted.extend(node_reads(nodes[i]))
    return sorted(live)


def range_boundary(nodes: Sequence[Any], indices: Sequence[int], initializers: set[str]) -> tuple[list[str], set[str]]:
    """``(reads, made)``: the values the nodes read from outside (in order, initializers left out),
    and the values they make."""
    made = {v for i in indices for v in nodes[i].output if v}
    reads = [v for i in indices for v in node_reads(nodes[i]) if v not in made and v not in initializers]
    return list(dict.fromkeys(reads)), made


def extract_nodes(
    proto: "onnx.ModelProto",
    indices: Iterable[int],
    outputs: Sequence[str],
    *,
    value_info: Mapping[str, tuple[int, Sequence[int] | None]] | None = None,
    types: Mapping[str, int] | None = None,
    ext_dir: "str | Path | None" = None,
    name: str = "subgraph",
    doc: str = "",
) -> "onnx.ModelProto":
    """A model holding the nodes ``indices`` of ``proto`` (in the file's order, which is topological),
    with ``outputs`` as its graph outputs and every value they read from outside as a graph input.

    ``value_info`` gives ``(elem_type, shape)`` of inputs and outputs (the shape of the arrays that
    will be fed, usually); else the element type comes from ``types`` (the file's value types) and
    the shape is left open. ``ext_dir``: the folder of the file's external data, read for the
    initializers the cut uses. Raises :class:`OnnxFileError` when an output is not made by the nodes
    or an external initializer cannot be read.
    """
    import onnx
    from onnx import helper

    graph = proto.graph
    nodes = list(graph.node)
    keep = sorted(set(indices))
    inits = {t.name: t for t in graph.initializer}
    # Constant nodes outside the set whose values the set reads come along (they are part of the computation)
    made_inside = {v for i in keep for v in nodes[i].output if v}
    wanted = {v for i in keep for v in node_reads(nodes[i]) if v not in made_inside}
    keep = sorted(set(keep) | {i for i, n in enumerate(nodes) if n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                               and any(o in wanted for o in n.output)})
    reads, made = range_boundary(nodes, keep, set(inits))
    missing = [v for v in outputs if v not in made]
    if missing:
        raise OnnxFileError(f"cannot cut the subgraph {name!r}: its nodes do not make {missing}; ask for outputs "
                            "that the chosen nodes compute")
    info = dict(value_info or {})
    type_of = dict(types or {})

    def declare(v: str) -> "onnx.ValueInfoProto":
        elem, shape = info.get(v, (type_of.get(v, onnx.TensorProto.FLOAT), None))
        return helper.make_tensor_value_info(v, int(elem), None if shape is None else list(shape))

    used_inits = [v for i in keep for v in node_reads(nodes[i]) if v in inits and v not in made]
    copied = []
    for v in dict.fromkeys(used_inits):
        t = onnx.TensorProto()
        t.CopyFrom(inits[v])
        if t.data_location == onnx.TensorProto.EXTERNAL:
            if ext_dir is None:
                raise OnnxFileError(f"initializer {v!r} of the cut {name!r} lives in external data whose folder is "
                                    "unknown; pass the path of the .onnx file, not a ModelProto")
            from onnx.external_data_helper import load_external_data_for_tensor

            try:
                load_external_data_for_tensor(t, str(ext_dir))
            except OSError as exc:
                raise OnnxFileError(f"cannot read the external data of initializer {v!r} from {ext_dir}: {exc}. "
                                    "Keep the file's external data files beside it.") from exc
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
        copied.append(t)
    g = helper.make_graph([nodes[i] for i in keep], name, [declare(v) for v in reads], [declare(v) for v in outputs],
                          initializer=copied, doc_string=doc)
    known = {vi.name: vi for vi in graph.value_info}
    g.value_info.extend(known[v] for v in sorted(made - set(outputs)) if v in known)
    cut = helper.make_model(g, opset_imports=list(proto.opset_import), producer_name="pytest-onnx-parity (cut)",
                            doc_string=doc)
    cut.ir_version = proto.ir_version
    used_fns = {(n.domain, n.op_type) for n in g.node}
    cut.functions.extend(f for f in proto.functions if (f.domain, f.name) in used_fns)
    return cut


def all_values(proto: "onnx.ModelProto", types: Mapping[str, int]) -> "onnx.ModelProto":
    """A copy of ``proto`` with every value its nodes make as a graph output (floating point or not)."""
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    for node in proto.graph.node:
        for v in node.output:
            if v and v not in have:
                out.graph.output.append(helper.make_tensor_value_info(v, int(types.get(v, onnx.TensorProto.FLOAT)), None))
                have.add(v)
    return out

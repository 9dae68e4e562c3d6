"""Simplifiers as a matrix axis: the export run through onnxslim or onnx-simplifier (onnxsim).

Teams run a simplifier after every export, so the file they ship is the simplified one, and
simplifiers change results too (OnnxSlim #277: "output mismatch and accuracy drop due to
EliminationSlice"; onnxsim prints "Check failed, please be careful to use the simplified
model"). Each value of ``--onnx-parity-simplifier`` is one item; the simplified file is derived
from the one float32 export and cached under a key that holds the simplifier and its version
(:func:`~.export.derive_export`). The file keeps the export's metadata (data config,
provenance) and records the simplifier. A simplifier that is not installed makes the item
skipped, with the ``pip install`` that fixes it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: simplifier -> (import name, the pip install that brings it)
SIMPLIFIER_PACKAGES = {"onnxslim": ("onnxslim", "pip install onnxslim"), "onnxsim": ("onnxsim", "pip install onnxsim")}
SIMPLIFIER_KEY = "onnx_parity.simplifier"


def simplifier_missing(name: str) -> str | None:
    """Why ``name`` cannot run here (not installed, with the fix), or None."""
    if name == "none":
        return None
    import importlib.util

    module, fix = SIMPLIFIER_PACKAGES[name]
    if importlib.util.find_spec(module) is None:
        return f"simplifier {name} is not installed: {fix}"
    return None


def simplifier_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def simplify(src: Path, dst: Path, name: str) -> None:
    """Write ``src`` run through the simplifier ``name`` to ``dst``, with ``src``'s metadata kept."""
    from .io import load_onnx_proto, save_onnx

    model = load_onnx_proto(src, weights=True)
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        if name == "onnxslim":
            import onnxslim

            out = onnxslim.slim(model)
        elif name == "onnxsim":
            import onnxsim

            out, ok = onnxsim.simplify(model)
            if not ok:
                raise ExportError("onnxsim's own check failed on the simplified file (it says: please be careful to "
                                  "use the simplified model)")
        else:
            raise ExportError(f"unknown simplifier {name!r}: choose one of none, {', '.join(SIMPLIFIER_PACKAGES)}")
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the simplifier's own failure, reported with its words
        raise ExportError(f"{name} could not simplify {src.name}: {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:400]}") from exc
    carry_scopes(model, out)
    del out.metadata_props[:]
    for key, value in {**meta, SIMPLIFIER_KEY: f"{name} {simplifier_version(name)}"}.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    save_onnx(out, dst)


def carry_scopes(original: "onnx.ModelProto", simplified: "onnx.ModelProto") -> int:
    """Give the simplified file's nodes the module scopes they had in the export; the number of nodes given one.

    Simplifiers drop node metadata (the dynamo exporter's ``pkg.torch.onnx.name_scopes``) and rename
    nodes they rewrite (the TorchScript exporter's scope lives in the node name), so the per-layer
    check could not tell which module a node computes. A node keeps, or gets back, the scope of the
    export's node of the same name, else of the node that produced the same output value (a fused
    Conv + BatchNorm computes what the BatchNorm produced). A node made from nothing the export had
    keeps no scope. Labels only: names and metadata do not change what the graph computes.
    """
    from ..layers.scopes import SCOPES_KEY

    by_name = {n.name: n for n in original.graph.node if n.name}
    by_output = {o: n for n in original.graph.node for o in n.output if o}
    dynamo = any(p.key == SCOPES_KEY for n in original.graph.node for p in n.metadata_props)
    given = 0
    for node in simplified.graph.node:
        source = by_name.get(node.name) or next((by_output[o] for o in node.output if o in by_output), None)
        if source is None:
            continue
        if dynamo:
            if any(p.key == SCOPES_KEY for p in node.metadata_props):
                continue
            for prop in source.metadata_props:
                if prop.key == SCOPES_KEY:
                    entry = node.metadata_props.add()
                    entry.key, entry.value = prop.key, prop.value
                    given += 1
        elif node.name not in by_name and source.name:
            node.name = source.name
            given += 1
    return given

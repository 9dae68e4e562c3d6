"""Helpers for testing the checks of exports: planted faults.

A check that cannot fail is a defect: these functions make an ONNX file wrong in a
known place, so a test can prove a check names it. torch and onnx are imported
inside the functions.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from ..errors import OnnxParityError

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

__all__ = ["scale_layer_weights"]


def scale_layer_weights(
    model: "torch.nn.Module",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    layer: str,
    factor: float = 1.05,
) -> "onnx.ModelProto":
    """A copy of the ONNX model with the weights of one torch module scaled by ``factor``.

    The fault a per-layer check must catch: the largest floating-point initializer
    used by the nodes of ``layer``'s ONNX scope is multiplied by ``factor`` (a copy is
    made when other nodes share it, so only that layer changes). When the module has
    no node of its own (the exporter fused it with its neighbour: a conv and its batch
    norm), the node using an initializer named ``<layer>.weight`` is used, else the
    scope of the sibling module just before or after it. Returns the modified ``ModelProto`` (weights loaded in memory).
    """
    import numpy as np
    import onnx as onnx_lib
    from onnx import numpy_helper

    from ..layers.scopes import FLOAT_TYPES, GraphScopes, parent_path

    if isinstance(onnx, onnx_lib.ModelProto):
        proto = onnx_lib.ModelProto()
        proto.CopyFrom(onnx)
    else:
        from ..onnxfile.io import load_onnx_proto

        proto = load_onnx_proto(onnx, weights=True)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise OnnxParityError(f"the model has no module {layer!r}")
    graph = GraphScopes(proto, modules)
    inits = {t.name: t for t in proto.graph.initializer}
    parent = parent_path(layer, modules)
    siblings = [n for n in modules if n and parent_path(n, modules) == parent]
    at = siblings.index(layer)
    by_name = [i for i, node in enumerate(proto.graph.node) if f"{layer}.weight" in node.input]
    scopes = [graph.nodes_of.get(layer, []), by_name]  # the dynamo exporter keeps a fused conv's weight name
    scopes += [graph.nodes_of.get(n, []) for n in (*siblings[max(0, at - 1) : at], *siblings[at + 1 : at + 2])]
    all_nodes = proto.graph.node
    for scope in scopes:
        weights = [
            v for i in scope for v in all_nodes[i].input
            if v in inits and inits[v].data_type in FLOAT_TYPES and math.prod(inits[v].dims) > 1
        ]  # fmt: skip
        if weights:
            break
    else:
        raise OnnxParityError(f"no weight initializer found in the ONNX scope of {layer!r} or its neighbours")
    target = max(dict.fromkeys(weights), key=lambda v: math.prod(inits[v].dims))
    inside = set(scope)
    shared = any(target in node.input and i not in inside for i, node in enumerate(all_nodes))
    array = numpy_helper.to_array(inits[target])
    scaled = (array.astype(np.float64) * factor).astype(array.dtype)
    new_name = target
    if shared:
        new_name = f"{target}__scaled_{layer}"
        for i in scope:
            for k, v in enumerate(all_nodes[i].input):
                if v == target:
                    all_nodes[i].input[k] = new_name
        proto.graph.initializer.append(numpy_helper.from_array(scaled, new_name))
    else:
        inits[target].CopyFrom(numpy_helper.from_array(scaled, target))
    return proto

"""Per-layer parity: the first torch module where ONNX Runtime departs from torch.

:func:`compare_layers` runs the torch model and the ONNX file on the same input and
compares, module by module, the output of each torch module with the ONNX value
that computes it. It needs nothing but the model and the file: no export-time
bookkeeping. docs/layers.md tells how to read the report.

One module per part, each importing only the ones above it in this list:

* :mod:`.results`: :class:`LayerResult`, :class:`Uncompared`, :class:`LayerComparison`,
  their one-line messages, tables and JSON; :func:`failure_message`.
* :mod:`.scopes`: which ONNX nodes belong to which torch module, from the file
  alone (the dynamo exporter's scope metadata, or TorchScript's scoped node names).
* :mod:`.tracer`: the torch side: hooks, which modules are compared (fusions,
  aliases, identities, shared modules) and the copies of their outputs.
* :mod:`.runtime`: the ONNX Runtime side: every needed value in one run.
* :mod:`.verdict`: the statistics of each layer and the growth rule.
* :mod:`.api`: :func:`compare_layers`, :func:`assert_layers_close`, :func:`parse_memory`.

The tolerance defaults live in :mod:`pytest_onnx_parity.tolerances`; the planted
fault of the tests, :func:`scale_layer_weights`, in :mod:`pytest_onnx_parity.testing.faults`
(re-exported here, imported on first use). Importing this package imports neither
torch nor onnx.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..tolerances import LAYER_ATOL, LAYER_GROWTH, LAYER_RTOL
from .api import assert_layers_close, compare_layers, parse_memory
from .results import DEFAULT_MEMORY_BUDGET, LayerComparison, LayerResult, Uncompared, failure_message

if TYPE_CHECKING:  # pragma: no cover
    from ..testing.faults import scale_layer_weights

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_GROWTH",
    "LayerComparison",
    "LayerResult",
    "Uncompared",
    "assert_layers_close",
    "compare_layers",
    "failure_message",
    "parse_memory",
    "scale_layer_weights",
]

#: Per-layer relative tolerance (float32): :data:`pytest_onnx_parity.tolerances.LAYER_RTOL`.
DEFAULT_RTOL = LAYER_RTOL
#: Absolute floor of the per-layer tolerance: :data:`pytest_onnx_parity.tolerances.LAYER_ATOL`.
DEFAULT_ATOL = LAYER_ATOL
#: Error growth allowed per layer: :data:`pytest_onnx_parity.tolerances.LAYER_GROWTH`.
DEFAULT_GROWTH = LAYER_GROWTH


def __getattr__(name: str) -> Any:
    if name == "scale_layer_weights":  # moved to .testing; imported on first use
        from ..testing.faults import scale_layer_weights

        return scale_layer_weights
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

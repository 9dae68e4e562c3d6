"""Per-layer parity: the first torch module where the ONNX file departs from torch, and why.

:func:`compare_layers` runs the torch model and the ONNX file on the same input and compares,
module by module, the output of each torch module with the ONNX value that computes it, and each
module's own error (its ONNX nodes on torch's values at its inputs). It needs nothing but the model
and the file: no export-time bookkeeping. docs/layers.md tells how to read the result.

Its modules, each importing only the ones before it in this list (tests/test_layers_package.py):

* :mod:`.results`: :class:`LayerResult`, :class:`Uncompared`, :class:`LayerComparison`, their
  one-line messages, tables and JSON; :func:`~.results.failure_message`.
* :mod:`.scopes`: which ONNX nodes belong to which torch module, from the file alone (the dynamo
  exporter's scope metadata, or TorchScript's scoped node names).
* :mod:`.teacher`: teacher forcing: each module's own ONNX computation on torch's values at its
  inputs, and its boundaries.
* :mod:`.probes`: scalar probes (the largest magnitude of each value) appended to a file.
* :mod:`.headroom`: fp16 headroom: how close each module's values come to float16's limits, both sides.
* :mod:`.tracer`: the torch side: hooks, which modules are compared (fusions, aliases, identities,
  shared modules) and the copies of their outputs.
* :mod:`.onnx_values`: the file's side: every needed value in one run, end to end and teacher forced.
* :mod:`.verdict`: the statistics of each layer and its verdict (own error first, the growth rule
  without one), coverage.
* :mod:`.api`: :func:`compare_layers`, :func:`assert_layers_close`, :func:`~.api.parse_memory`.
* :mod:`.isolate`: the divergent module cut out of the file with torch's values at its boundary.
* :mod:`.blame`: who to blame for it: the exporter, the runtime or a simplifier.
* :mod:`.reduce`: the smallest node range of that module that still diverges.
* :mod:`.repro`: :func:`~.repro.isolate_divergence`: the three above in one call.

This package exports the names the public API (``pytest_onnx_parity``) takes from it; everything
else is imported from its module. The tolerance defaults live in :mod:`pytest_onnx_parity.tolerances`
(``LAYER_ATOL``, ``LAYER_RTOL``, ``LAYER_GROWTH``), the planted fault of the tests in
:mod:`pytest_onnx_parity.testing` (``scale_layer_weights``). Importing this package imports neither
torch nor onnx.
"""
from __future__ import annotations

from .api import assert_layers_close, compare_layers
from .results import LayerComparison, LayerResult

__all__ = ["LayerComparison", "LayerResult", "assert_layers_close", "compare_layers"]

"""The module part of a reproducer bundle: the divergent module's ONNX subgraph with torch's values.

For a model whose per-layer check placed a first divergence, :func:`write_module_part` writes

``module.onnx``           the module's nodes alone (:func:`..layers.isolate.cut_module`): its boundary values
                          as graph inputs and outputs, the initializers it uses (inline)
``module_io.npz``         ``in0``, ``in1``, ...: the values at its inputs (torch's; ``bundle.json`` says the
                          source of each); ``out0``, ...: torch's values at its outputs
``module_reduced.onnx``   for a module of many nodes, its smallest node range that still diverges
``module_reduced_io.npz`` (:mod:`..layers.reduce`), with the values it is fed and those it must give

and returns what ``bundle.json`` holds about them (``module``), which ``reproduce.py --module`` reads.
The isolation the ``layers`` check made is reused; it is made here when the check did not (an
inconclusive verdict).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .runstate import RunState

__all__ = ["MODULE_FILES", "write_module_part"]

MODULE_FILES = ("module.onnx", "module_io.npz", "module_reduced.onnx", "module_reduced_io.npz")


def write_module_part(run_state: "RunState", out: Path, attempt: Callable[[str, Callable[[], Any]], Any]) -> dict[str, Any] | None:
    """Write the module files into ``out``; ``bundle.json``'s ``module`` entry, or None when there is no divergence
    (``attempt(what, fn)`` records a part that cannot be made)."""
    result = getattr(run_state, "result", None)
    cmp = getattr(result, "layer_comparison", None)
    if cmp is None or getattr(cmp, "first_divergence", None) is None:
        return None
    check = result.check("layers") if hasattr(result, "check") else None
    isolation = getattr(check, "isolation", None)
    if isolation is None:  # the layers check did not cut it out (an inconclusive verdict): cut it here
        isolation = attempt("module subgraph", lambda: _isolate(run_state, cmp))
    if isolation is None:
        problem = ((getattr(check, "details", None) or {}).get("module_repro") or {}).get("problem")
        first = cmp.first_divergence
        return {"module": first.name, "module_type": first.module_type,
                "problem": problem or "the module could not be cut out (see problems)"}
    return attempt("module subgraph files", lambda: _write(isolation, out))


def _isolate(run_state: Any, cmp: Any) -> Any:
    from ..layers.repro import isolate_divergence

    ctx = getattr(run_state, "context", None)
    model = getattr(run_state, "model", None)
    x = getattr(run_state, "inputs", None)
    if ctx is None or model is None or x is None:
        from ..errors import OnnxParityError

        raise OnnxParityError("the run has no model, file or inputs to cut the module from; write the bundle after "
                              "ParityRun.execute ran the checks")
    options = getattr(run_state, "options", None)
    return isolate_divergence(model, ctx.model_part or ctx.path, x[:1], cmp, exporter=run_state.result.exporter,
                              level=getattr(options, "ort_opt", "all"))


def _write(isolation: Any, out: Path) -> dict[str, Any]:
    import numpy as np

    from ..axes import ORT_OPT_LEVELS
    from ..onnxfile.io import save_onnx

    cut = isolation.cut
    meta = isolation.to_dict()
    save_onnx(cut.proto, out / "module.onnx")
    inputs, outputs, arrays = _io(cut.inputs, cut.outputs, {k: cut.sources[k] for k in cut.inputs})
    np.savez(out / "module_io.npz", **arrays)
    meta.update(file="module.onnx", values="module_io.npz", inputs=inputs, outputs=outputs,
                ort_levels=dict(ORT_OPT_LEVELS), expected="torch's output")
    r = isolation.reduction
    if r is not None:
        how = ("torch's value" if r.judged_by == "torch" else
               f"ONNX Runtime's value (a run of module.onnx on torch's inputs, level {r.level})")
        save_onnx(r.proto, out / "module_reduced.onnx")
        rin, rout, rarrays = _io(r.inputs, r.expected, {k: how for k in r.inputs})
        np.savez(out / "module_reduced_io.npz", **rarrays)
        meta["reduced"].update(file="module_reduced.onnx", values="module_reduced_io.npz", inputs=rin, outputs=rout,
                               modules=list(dict.fromkeys(m or "(no module)" for m in r.node_modules)),
                               expected="torch's values" if r.judged_by == "torch" else
                               "ONNX's reference evaluator on the same inputs")
    return meta


def _io(inputs: dict[str, Any], outputs: dict[str, Any], sources: dict[str, str]) -> tuple[list, list, dict]:
    arrays: dict[str, Any] = {}
    ins, outs = [], []
    for k, (name, a) in enumerate(inputs.items()):
        arrays[f"in{k}"] = a
        ins.append({"name": name, "key": f"in{k}", "shape": list(a.shape), "dtype": str(a.dtype),
                    "source": sources.get(name, "")})
    for k, (name, a) in enumerate(outputs.items()):
        arrays[f"out{k}"] = a
        outs.append({"name": name, "key": f"out{k}", "shape": list(a.shape)})
    return ins, outs, arrays

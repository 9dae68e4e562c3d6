"""The per-layer check: :func:`compare_layers` and :func:`assert_layers_close`.

One pass each side: torch runs one forward with hooks (:mod:`.tracer`), ONNX Runtime
one run computing every needed value (:mod:`.onnx_values`); each pair is measured and
judged (:mod:`.verdict`).

Memory: the copies of the intermediate tensors (torch side and ONNX Runtime side
together) are bounded by ``memory_budget`` (default :data:`DEFAULT_MEMORY_BUDGET`).
When they would exceed it, layers are compared in chunks: one torch forward and
one ONNX Runtime run per chunk, each keeping only its chunk's tensors. Peak memory
is about that of a plain inference of each side, plus ``memory_budget``, plus one
copy of the model file. A chunk holds at least one layer, so one huge layer may
exceed it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import OnnxParityError, ParityFailure, SpecError
from ..tolerances import LAYER_GROWTH, layer_tolerance
from ..units import parse_size
from .results import DEFAULT_MEMORY_BUDGET, LayerComparison, LayerResult, Uncompared, failure_message
from .onnx_values import ort_nbytes, run_onnx
from .scopes import GraphScopes, Source, graph_input, load_source
from .tracer import Tracer
from .verdict import judge, measure

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx
    import torch

    from ..runtime.runner import RunSettings

__all__ = ["assert_layers_close", "compare_layers", "parse_memory"]


def compare_layers(
    model: "torch.nn.Module | str",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    inputs: "torch.Tensor | np.ndarray",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    memory_budget: int | str | None = None,
    growth: float | None = None,
    teacher_forcing: bool = True,
    elem_rtol: float = 0.0,
    settings: "RunSettings | None" = None,
) -> LayerComparison:
    """Compare each torch module's output with the ONNX value that computes it.

    ``model`` is an ``nn.Module`` or a model spec (loaded with
    :func:`pytest_onnx_parity.load_model`); ``onnx`` a path or an ``onnx.ModelProto``
    made from that model by either exporter; ``inputs`` one NCHW float batch (torch
    tensor or numpy array). ``atol`` and ``rtol`` (given together or not at all)
    and ``growth`` set the per-layer tolerance
    ``atol + rms(torch activation) * max(rtol, growth * upstream_rel)``.
    ``memory_budget`` (bytes, or a string such as ``"512MiB"``) bounds the copies of
    intermediate tensors held at once; above it layers are compared in chunks.

    Each layer's own error (``own_diff``: its ONNX nodes on torch's values at its inputs, :mod:`.teacher`)
    decides its verdict: ``own_diff <= atol + rtol * rms``, each element also allowed ``elem_rtol`` times
    its own magnitude (``own_excess``; the float16 profile sets it: rounding scales with the value);
    ``teacher_forcing=False`` skips that run and judges every layer by the growth rule on its end-to-end
    difference. ``settings`` (:class:`~..runtime.runner.RunSettings`): the runtime the ONNX side runs on
    (the variant's: its provider, optimisation level, or another runtime); Python onnxruntime on the CPU
    when None.
    """
    tol = layer_tolerance(atol, rtol)
    atol, rtol = tol.atol, tol.rtol
    growth = LAYER_GROWTH if growth is None else float(growth)
    if not growth >= 1:
        raise SpecError(f"growth must be >= 1, got {growth!r}")
    elem_rtol = float(elem_rtol)
    if not 0 <= elem_rtol < 1:
        raise SpecError(f"elem_rtol must be >= 0 and < 1, got {elem_rtol!r}")
    budget = parse_memory(memory_budget) if memory_budget is not None else DEFAULT_MEMORY_BUDGET
    model = _resolve_model(model)
    source = load_source(onnx)
    input_name, input_dtype = graph_input(source.proto)
    x_np, x_torch = _as_batch(inputs, input_dtype, model)

    modules = dict(model.named_modules())
    graph = GraphScopes(source.proto, modules)
    tracer = Tracer(model, modules, graph, side_budget=max(1, budget // 2))
    was_training = model.training
    model.eval()
    try:
        run = _run_chunks(tracer, source, input_name, x_np, x_torch, graph.types, teacher_forcing, elem_rtol, settings)
    finally:
        tracer.close()
        if was_training:
            model.train()

    measured = [run.results[name] for name in tracer.order if name in run.results]
    order = {name: i for i, name in enumerate(modules)}
    return LayerComparison(
        layers=judge(measured, tracer.order, tracer.sources, atol, rtol, growth),
        uncompared=sorted(run.uncompared.values(), key=lambda u: order.get(u.name, 0)),
        atol=atol,
        rtol=rtol,
        growth=growth,
        elem_rtol=elem_rtol,
        exporter=graph.exporter,
        onnx_runs=run.runs,
        forced_runs=run.forced_runs,
        own_note=run.own_note if teacher_forcing else "teacher_forcing=False",
        torch_forwards=run.forwards,
        memory_budget=budget,
        peak_tensor_bytes=run.peak,
        input_shape=tuple(x_np.shape),
        note=graph.note,
    )


def assert_layers_close(
    model: "torch.nn.Module | str",
    onnx: "str | os.PathLike[str] | onnx.ModelProto",
    inputs: "torch.Tensor | np.ndarray",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    memory_budget: int | str | None = None,
    growth: float | None = None,
    elem_rtol: float = 0.0,
) -> LayerComparison:
    """Raise :class:`ParityFailure` naming the first diverging module; return the comparison.

    Raises :class:`OnnxParityError` when too little could be compared to pass (never a silent
    pass; the rule is :func:`~pytest_onnx_parity.layers.verdict.coverage_problem`).
    """
    from .verdict import coverage_problem

    __tracebackhide__ = True
    comparison = compare_layers(
        model, onnx, inputs, atol=atol, rtol=rtol, memory_budget=memory_budget, growth=growth, elem_rtol=elem_rtol
    )
    if not comparison.passed:
        raise ParityFailure(failure_message(comparison))
    thin = coverage_problem(len(comparison.layers), comparison.uncompared, comparison.note)
    if thin:
        raise OnnxParityError(f"{comparison.message()}: {thin}" if not comparison.layers else thin)
    return comparison


def parse_memory(value: int | float | str) -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"512MB"``, ``"512M"`` or ``"2e9"`` (:func:`~pytest_onnx_parity.units.parse_size`)."""
    return parse_size(value, what="memory budget")


# --------------------------------------------------------------------------- the chunks


class _Run:
    """What the chunked runs gathered: the measured layers, the modules not compared, the counts."""

    def __init__(self) -> None:
        self.results: dict[str, LayerResult] = {}
        self.uncompared: dict[str, Uncompared] = {}
        self.peak = 0
        self.runs = 0
        self.forced_runs = 0
        self.forwards = 0
        self.own_note = ""
        self.settings: "RunSettings | None" = None  # the runtime the ONNX side runs on


def _run_chunks(
    tracer: Tracer, source: Source, input_name: str, x_np: "np.ndarray", x_torch: "torch.Tensor", types: dict[str, int],
    teacher_forcing: bool = True, elem_rtol: float = 0.0, settings: "RunSettings | None" = None,
) -> _Run:
    """One torch forward and two ONNX Runtime runs per chunk: end to end, then teacher forced (each module's
    nodes on torch's values at the boundaries it reads, :mod:`.teacher`); each pair measured, then freed."""
    from .teacher import boundaries

    run = _Run()
    run.settings = settings
    bounds = None
    chunk_index = 0
    while True:
        captured = tracer.forward(x_torch, chunk_index)
        run.forwards += 1
        if chunk_index == 0:
            run.uncompared.update(tracer.uncompared)
            if teacher_forcing:
                bounds = boundaries(source.proto, [entry.value for entry in tracer.plan.values()])
                by_value = {entry.value: name for name, entry in tracer.plan.items()}
                tracer.cut_chunks({name: tuple(by_value[v] for v in bounds.feeders.get(entry.value, ()) if v in by_value)
                                   for name, entry in tracer.plan.items()})
        members = [name for name in captured if tracer.plan[name].chunk == chunk_index]
        if members:
            onnx_out = run_onnx(source, input_name, x_np, [tracer.plan[name].value for name in members], types,
                                settings=run.settings)
            run.runs += 1
            kept = sum(a.nbytes for a in captured.values())
            run.peak = max(run.peak, kept + sum(map(ort_nbytes, onnx_out.values())))
            for name in members:
                entry = tracer.plan[name]
                value = onnx_out.pop(entry.value)  # each comparison frees ONNX Runtime's tensor
                actual = value.numpy()
                if tuple(actual.shape) != tuple(captured[name].shape):
                    run.uncompared[name] = Uncompared(
                        name,
                        entry.module_type,
                        f"shape mismatch: torch {tuple(captured[name].shape)}, ONNX value {entry.value!r} "
                        f"{tuple(actual.shape)}",
                    )
                    continue
                run.results[name] = measure(entry, captured[name], actual)
                del actual, value
            del onnx_out
            if bounds is not None:
                _own_errors(run, tracer, source, input_name, x_np, types, captured, members, bounds, kept, elem_rtol)
        captured.clear()
        chunk_index += 1
        if chunk_index >= tracer.n_chunks:
            return run


def _own_errors(run: _Run, tracer: Tracer, source: Source, input_name: str, x_np: "np.ndarray",
                types: dict[str, int], captured: dict[str, "np.ndarray"], members: list[str], bounds: Any,
                kept: int, elem_rtol: float) -> None:
    """The teacher-forced run of one chunk: each measured module's own error (``own_diff``) added to its row."""
    import dataclasses

    from .verdict import max_abs_diff

    measured = [name for name in members if name in run.results]
    forced = {tracer.plan[name].value: array for name, array in captured.items() if name not in run.uncompared}
    try:
        values = [tracer.plan[name].value for name in measured]
        own_out = run_onnx(source, input_name, x_np, values, types, forced=forced,
                           nodes={i for v in values for i in bounds.regions.get(v, ())}, settings=run.settings)
    except OnnxParityError as exc:
        run.own_note = f"no own errors: {exc}"
        return
    run.forced_runs += 1
    run.peak = max(run.peak, kept + sum(map(ort_nbytes, own_out.values())))
    for name in measured:
        value = tracer.plan[name].value
        own = own_out.pop(value).numpy()
        if tuple(own.shape) != tuple(captured[name].shape):
            continue
        own_diff = max_abs_diff(captured[name], own)
        run.results[name] = dataclasses.replace(
            run.results[name], own_diff=own_diff, own_nodes=bounds.own_nodes.get(value, ()),
            own_excess=max_abs_diff(captured[name], own, elem_rtol) if elem_rtol else own_diff)
        del own


# --------------------------------------------------------------------------- inputs


def _as_batch(inputs: Any, input_dtype: Any, model: "torch.nn.Module") -> tuple["np.ndarray", "torch.Tensor"]:
    """The batch for each side: numpy in the ONNX input's dtype, torch on the model's device and dtype."""
    import numpy as np
    import torch

    if isinstance(inputs, np.ndarray):
        x_np = np.ascontiguousarray(inputs)
        x_torch = torch.from_numpy(x_np.copy())
    elif isinstance(inputs, torch.Tensor):
        x_torch = inputs.detach()
        x_np = x_torch.cpu().numpy()
    else:
        raise TypeError(f"inputs must be a torch tensor or a numpy array, got {type(inputs).__name__}")
    x_np = x_np.astype(input_dtype, copy=False)
    if x_np.ndim == 3:  # one CHW image
        x_np, x_torch = x_np[None], x_torch[None]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return x_np, x_torch.to(device=device, dtype=_torch_float_dtype(model))


def _resolve_model(model: Any) -> "torch.nn.Module":
    """``model`` itself, or the model a spec string names (loaded by :mod:`pytest_onnx_parity.model.build`)."""
    if isinstance(model, str):
        try:
            from ..model.build import load_model
        except ImportError as exc:  # pragma: no cover - model/build.py ships with the package
            raise OnnxParityError(f"cannot load the model spec {model!r}: {exc}. Pass an nn.Module instead.") from exc
        return load_model(model)
    import torch

    from ..model.record import LoadedModel

    if isinstance(model, LoadedModel):
        return model.module
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or a model spec string, got {type(model).__name__}")
    return model


def _torch_float_dtype(model: "torch.nn.Module") -> "torch.dtype":
    """The dtype of the model's first floating-point parameter (float32 when it has none)."""
    import torch

    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32

"""One parity run: build or take the model, export or take the file, run the checks, fold the status.

:class:`ParityRun` owns a run's state and its whole lifecycle, and :meth:`ParityRun.execute`
is the one entry point that :func:`check_parity` (plain Python), :func:`check_file`
(``onnx-parity check``) and the gate item (:mod:`.plugin.gate`) call. The checks are
:mod:`.checks`, one module each, in this order:

``weights`` (:mod:`.checks.weights`)
    the file's initializers against the model's parameters (the file holds these weights?).
``data_config`` (:mod:`.checks.data_config`)
    the config read back from the file equals the model's own resolved config.
``logits`` (:mod:`.checks.logits`)
    torch against ONNX Runtime on a seeded random batch, tolerance scaled by the logits.
``topk`` (:mod:`.checks.topk`)
    top-k agreement on that batch; near-tie swaps are reported, not failed.
``batch_consistency`` (:mod:`.checks.batch_consistency`)
    a sample run alone gives what it gives inside the batch.
``real_images`` (:mod:`.checks.real_images`; :mod:`.checks.int8` for an int8 file)
    end to end on real photos: timm's eval transform on the torch side, the file's metadata
    and :func:`~.preprocessing.transform.preprocess` on the ONNX side.
``headroom`` (:mod:`.checks.headroom`)
    how close each module's values come to float16's limits: a warning for an fp32 file, a failure for
    an fp16 file whose float16 values overflow.
``layers`` (:mod:`.checks.layers`)
    the first module where ONNX Runtime departs from torch.
``golden`` (:mod:`.checks.golden`; only with ``golden=DIR``)
    each side against the golden an earlier run recorded: which one moved, between which versions.

A check that did not run is ``skipped`` with its reason, never ``passed``. The status folds
the checks: ``failed`` if any failed, else ``error`` (inconclusive) if any could not be
judged, else ``passed`` only when at least one check passed; a variant this model or machine
cannot run is ``skipped``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .axes import use_ema
from .checks.order import fold_status
from .errors import MissingMetadataError, OnnxFileError, OnnxParityError, SpecError, VariantSkip
from .options import ParityOptions
from .results import ParityResult
from .specs import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .checks.context import CheckContext
    from .onnxfile.export import OnnxExport
    from .model.record import LoadedModel
    from .runtime.runner import Runner, RunSettings

__all__ = ["ParityRun", "check_file", "check_parity", "fold_status"]


class ParityRun:
    """One model's run. Build it, call :meth:`execute` once, read ``result``, then :meth:`close`
    (or use it as a context manager). ``prebuilt``: a model built for an earlier variant of the
    same spec, with its record (it is only read by the checks)."""

    def __init__(self, model: Any, onnx: Any = None, options: ParityOptions | None = None, *,
                 progress: Callable[[str], None] | None = None, prebuilt: "LoadedModel | None" = None) -> None:
        self.options = options or ParityOptions()
        self.model_arg = model
        self.onnx_arg = onnx
        self.progress = progress or (lambda msg: None)
        self.result = ParityResult(model=_label(model, onnx),
                                   exporter=None if onnx is not None else self.options.exporter)
        self.built: "LoadedModel | None" = prebuilt  # the module and its record (model/record.py)
        self.export: "OnnxExport | None" = None
        self._prebuilt = prebuilt is not None
        self._session: "Runner | None" = None
        self._tmpdir: str | None = None
        self._ctx: "CheckContext | None" = None
        self._given_file = False
        self._embedded = False
        self._model_part: Path | None = None
        self._unsimplified: Path | None = None

    # -- the lifecycle ---------------------------------------------------------------------------------
    def execute(self, *, raise_errors: bool = False) -> ParityResult:
        """Prepare, check and fold; the result, with its timings. A model or file that cannot be built,
        exported or read gives status ``error`` with the reason in ``.error`` (``raise_errors=True``
        raises instead); a variant that cannot run here gives ``skipped``."""
        t0 = time.perf_counter()
        r = self.result
        try:
            self._prepare()
        except VariantSkip as exc:
            r.status, r.error = "skipped", str(exc)
            if r.variant is None:
                from .variants import variant_dict

                r.variant = variant_dict(self.options)
        except OnnxParityError as exc:
            if raise_errors:
                raise
            r.status, r.error = "error", str(exc)
        else:
            self._run_checks()
        r.timings["total_s"] = time.perf_counter() - t0
        return r

    def close(self) -> None:
        """Close the runner and delete a no-cache export."""
        if self._session is not None:
            self._session.close()
        self._session = None
        if self._tmpdir is not None:
            import shutil

            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "ParityRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what helpers may read (bundles, plots) ------------------------------------------------------
    @property
    def model(self) -> "torch.nn.Module | None":
        """The torch module (None before it was built); its record is ``built.record``."""
        return self.built.module if self.built is not None else None

    @property
    def context(self) -> "CheckContext | None":
        """The checks' context (None before the checks ran)."""
        return self._ctx

    @property
    def inputs(self) -> "np.ndarray | None":
        """The random batch torch ran (float32 NCHW), once the checks ran."""
        return self._ctx.inputs.x if self._ctx is not None and self._ctx.inputs is not None else None

    @property
    def onnx_file_given(self) -> bool:
        """True when the run checks a file made elsewhere (``onnx=`` or ``@FILE``), not its own export."""
        return self._given_file

    @property
    def settings(self) -> "RunSettings":
        """Where this run's file runs: the variant's runtime, provider, optimisation level (runtime/runner.py)."""
        from .runtime.runner import RunSettings

        return RunSettings.of(self.options)

    def session(self) -> "Runner":
        """The runner of this run's file on the variant's runtime, opened once; what ran goes to ``runtime_info``."""
        if self._session is None:
            from .runtime.runner import open_runner

            assert self.export is not None
            self._session = open_runner(self.export.path, self.settings)
            self.result.runtime_info = self._session.info().to_dict()
        return self._session

    # -- phases ------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Build the model and export it (or take the given file). Errors propagate."""
        from .onnxfile.io import load_onnx_proto
        from .onnxfile.metadata import file_exporter, file_opset
        from .runtime.runner import runtime_missing
        from .variants import check_variant, variant_dict

        o, r = self.options, self.result
        why = runtime_missing(self.settings)
        if why:
            from .runtime.environment import on_ci

            if on_ci() and not self.settings.runtime_spec.name == "onnxruntime":
                raise OnnxParityError(f"{why} (CI is set, where a runtime that cannot start is an error, not a skip: "
                                      "install it in the CI script)")
            raise VariantSkip(why)
        t = time.perf_counter()
        self.progress("build")
        onnx_arg = self.onnx_arg if self.onnx_arg is not None else _spec_onnx_file(self.model_arg, o.weights)
        if self.built is None:
            self.built = _build(self.model_arg, o)
        record = self.built.record
        r.data_config_source = record.data_config_source
        r.variant = variant_dict(o, self.built)
        check_variant(self.built, o)  # VariantSkip: a variant this model or machine cannot run
        r.weights = record.weights or o.weights or "given module"
        r.timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if onnx_arg is None:
            self._export()
            assert self.export is not None
            r.exporter = self.export.exporter or r.exporter
            r.opset = self.export.opset or file_opset(self.export.path)
        else:  # made elsewhere: what the file says (its graph parsed once), never the exporter option
            if o.simplifier != "none":
                raise VariantSkip(f"--onnx-parity-simplifier {o.simplifier}: a file made elsewhere is checked as it is "
                                  "(simplify it in your pipeline and give the simplified file)")
            self._take_file(onnx_arg)
            assert self.export is not None
            graph = load_onnx_proto(self.export.path)
            r.exporter, r.opset = file_exporter(graph, self.export.provenance), file_opset(graph)
            if r.variant is not None:
                r.variant["exporter"] = r.exporter
        r.cache_hit = self.export.cache_hit
        r.onnx_path = str(self.export.path if onnx_arg is None else self.export.path.resolve())  # as the shell and gate
        r.timings["export_s"] = self.export.export_s if onnx_arg is None and not self.export.cache_hit else 0.0
        self.session()  # opened here: a provider that falls back, a runtime that refuses the file, is said before any check
        r.timings["prepare_s"] = time.perf_counter() - t

    def _export(self) -> None:
        from .onnxfile.export import export_onnx
        from .onnxfile.variants import variant_export

        o = self.options
        self.progress("export")
        path = None
        if not o.use_cache:
            path = Path(self._workdir()) / "model.onnx"
        base = export_onnx(self.built, path, exporter=o.exporter, opset=o.opset, cache_dir=o.cache_dir,
                           use_cache=o.use_cache, seed=o.seed, dynamic_size=o.dynamic_size)
        self.export, self._model_part = variant_export(base, o, workdir=self._tmpdir)
        if o.simplifier != "none" and o.precision == "fp32" and not o.embed_preprocessing:
            self._unsimplified = base.path  # who to blame when the simplified file departs (checks/simplifier.py)
        self._embedded = o.embed_preprocessing
        self.progress("cache hit" if self.export.cache_hit else f"exported in {self.export.export_s:.1f}s")

    def _take_file(self, onnx_arg: Any) -> None:
        """A file made elsewhere, read (never written): its metadata, and an image input the checks can feed."""
        from .onnxfile.export import OnnxExport
        from .onnxfile.io import read_metadata
        from .onnxfile.metadata import read_data_config, read_provenance
        from .preprocessing.dataconfig import sized_config
        from .runtime.forward import choose_outputs, image_input_problem, probe_layout
        from .variants import given_file_variant, variant_dict

        if hasattr(onnx_arg, "graph"):
            raise SpecError("check_parity(onnx=...) takes the path of an ONNX file")
        path = Path(onnx_arg).expanduser()
        if path.is_dir() or (path.is_file() and path.suffix.lower() != ".onnx"):
            raise OnnxFileError(f"{path} is not an ONNX file (expected a file ending in .onnx). Pass the path of the "
                                ".onnx file your export step wrote.")
        read_metadata(path)  # parses the file: a clear error for missing or corrupt files
        try:
            cfg = read_data_config(path)
        except MissingMetadataError:
            cfg = {}
        self.export = OnnxExport(path=path, data_config=cfg, provenance=read_provenance(path))
        self._given_file = True
        assert self.built is not None
        o, config = self.options, self.built.record.data_config
        precision, self._embedded, self._model_part = given_file_variant(path, o.precision, self._workdir)
        # what the file is, as this run's own options: the caller's options are never changed
        self.options = o = replace(o, precision=precision, embed_preprocessing=o.embed_preprocessing or self._embedded)
        self.result.variant = variant_dict(o, self.built)
        problem = None if self._embedded else image_input_problem(self.session(), channels=int(config["input_size"][0]))
        if problem:
            raise OnnxFileError(f"{path}: {problem}")
        try:  # the file's outputs for the model's kind of output (one torch forward on one sample tells it)
            layout = probe_layout(self.model, sized_config(config, o.image_size), o.seed)
            self.result.output_kind = layout.kind
            choose_outputs(self.session(), layout, o.output)
        except OnnxFileError as exc:
            raise OnnxFileError(f"{path}: {exc}") from None

    def _workdir(self) -> str:
        if self._tmpdir is None:
            import tempfile

            self._tmpdir = tempfile.mkdtemp(prefix="onnx-parity-")
        return self._tmpdir

    def _context(self) -> "CheckContext":
        from .checks.context import CheckContext
        from .model.build import model_name

        assert self.built is not None and self.export is not None
        return CheckContext(
            model=self.built.module, record=self.built.record, export=self.export, options=self.options,
            session_factory=self.session, model_label=model_name(self.built), given_file=self._given_file,
            embedded=self._embedded, model_part=self._model_part, unsimplified=self._unsimplified,
            progress=self.progress)

    def _run_checks(self) -> None:
        from .checks.order import run_checks

        ctx = self._ctx = self._context()
        run_checks(ctx, self.result, given_file=self._given_file)
        if ctx.unsimplified is not None:
            from .checks.simplifier import blame_simplifier

            blame_simplifier(ctx, self.result)


def _build(model_arg: Any, options: ParityOptions) -> "LoadedModel":
    if options.dynamic_size:
        from .model.sizes import build_model

        return build_model(model_arg, options)
    from .onnxfile.export import resolve_model

    return resolve_model(model_arg, weights=options.weights, seed=options.seed, model_args=options.model_args,
                         data_config=options.data_config, use_ema=use_ema(options.weight_set))


def _label(model: Any, onnx: Any) -> str:
    """The result's model: the spec as written, or a module's name; ``SPEC@FILE`` (FILE as given) for a
    file made elsewhere, as the gate and ``onnx-parity check`` name it."""
    if isinstance(model, ModelSpec):
        label = model.text
    elif isinstance(model, str):
        label = model
    else:
        from .model.build import model_name

        label = model_name(model)
    if onnx is not None and not hasattr(onnx, "graph") and not label.lower().endswith(".onnx"):
        import os

        label = f"{label}@{os.fspath(onnx)}"
    return label


def _spec_onnx_file(model: Any, weights: str | None) -> str | None:
    """The ``@FILE.onnx`` of a spec (string or ModelSpec), or None."""
    if isinstance(model, str):
        from .specs import parse_spec

        return parse_spec(model, default_weights=weights or "random").onnx_file
    return model.onnx_file if isinstance(model, ModelSpec) else None


def check_parity(model: Any, onnx: Any = None, *, raise_errors: bool = False,
                 progress: Callable[[str], None] | None = None, **options: Any) -> ParityResult:
    """Everything one gate item checks; see the module docstring.

    ``model`` is a spec string, a timm ``nn.Module``, or :func:`~.model.build.load_model_record`'s pair (whose
    record names the data config's source); with ``onnx=`` (a path), or a spec ``NAME[=WEIGHTS]@FILE.onnx``,
    that file is checked instead of a fresh export (only read; see docs/shipped-file.md). Options are the
    fields of :class:`~.options.ParityOptions`: one per ``--onnx-parity-<noun>`` option (a matrix axis gives
    one value: ``provider``, ``precision``, ...), named, defaulted and checked by :mod:`.specs.optiontable`,
    plus the run's own keywords listed there (``RUN_ONLY``: ``batch_size``, ``topk``, ``real_images``, ...).
    A model that cannot be built or exported gives ``status == "error"`` with
    the reason in ``.error`` (``raise_errors=True`` raises instead).
    """
    with ParityRun(model, onnx, ParityOptions.from_kwargs(**options), progress=progress) as run:
        return run.execute(raise_errors=raise_errors)


def check_file(spec: ModelSpec, options: ParityOptions,
               after: "Callable[[ParityRun], None] | None" = None) -> ParityResult:
    """Every check of a gate item on ``spec``'s ``@FILE``; a file or model that cannot be checked gives status error.

    ``after(run)`` is called once the checks ran, before the run is closed (plots, bundles).
    """
    with ParityRun(spec, None, options) as run:
        result = run.execute()
        if after is not None and run.context is not None:
            after(run)
        return result

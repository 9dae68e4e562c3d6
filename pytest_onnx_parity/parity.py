"""Everything one gate item checks, callable from plain Python.

``check_parity(model, onnx=None, **options)`` builds (or takes) the model, exports
it (or takes the given ONNX file) and runs these checks, each recorded in
``ParityResult.checks``:

``data_config``
    the config read back from the file equals the model's own resolved config;
    each differing field is named with both values.
``logits``
    torch against ONNX Runtime on a seeded random batch (random pixels normalised
    with the model's mean/std), tolerance scaled by the logits (see compare.py).
``topk``
    top-k agreement on that batch; near-tie swaps are reported, not failed.
``batch_consistency``
    samples run alone (batch size 1) give what they give inside the batch.
``real_images``
    end to end on real photos: torch through timm's own eval transform, ONNX
    through :func:`preprocess` driven by the file's metadata.
``layers``
    per-layer comparison (first module where ONNX Runtime departs from torch).

A check that did not run is ``skipped`` with its reason, never ``passed``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import MissingMetadataError, OnnxParityError, SpecError
from .conditioning import torch_sensitivity
from .forward import ort_forward, random_batch, torch_forward
from .options import LAYER_MODES, ParityOptions
from .results import CheckResult, ParityResult
from .tolerances import logit_rms

__all__ = ["LAYER_MODES", "CheckResult", "ParityOptions", "ParityResult", "ParityRun", "check_parity",
           "ort_forward", "random_batch", "torch_forward"]

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from .export import OnnxExport

class ParityRun:
    """One model's gate run, in phases the gate item can time and report separately."""

    def __init__(self, model: Any, onnx: Any = None, options: ParityOptions | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.options = options or ParityOptions()
        self.model_arg = model
        self.onnx_arg = onnx
        self.progress = progress or (lambda msg: None)
        label = model if isinstance(model, str) else str(model) if type(model).__name__ == "ModelSpec" else _model_label(model)
        if onnx is not None and not hasattr(onnx, "graph") and not str(label).lower().endswith(".onnx"):
            # the label of a file made elsewhere is SPEC@FILE, FILE as given: what the gate and onnx-parity check say
            import os

            label = f"{label}@{os.fspath(onnx)}"
        self.result = ParityResult(model=str(label), exporter=None if onnx is not None else self.options.exporter)
        self.model: "torch.nn.Module | None" = None
        self.export: "OnnxExport | None" = None
        self._session: "onnxruntime.InferenceSession | None" = None
        self._tmpdir: str | None = None
        self._given_file = False  # True when checking a file made elsewhere (onnx= or @FILE)
        self.prebuilt: "torch.nn.Module | None" = None  # a model the gate built for an earlier variant of this spec
        self.model_part: Path | None = None  # what the per-layer check reads: the file without embedded preprocessing
        self.embedded = False  # the file takes uint8 pixels (embedded.py)
        self._inconclusive = False  # set when float rounding explains a difference (see _arbitrate)
        self._t0 = time.perf_counter()

    def close(self) -> None:
        """Drop the session and delete a no-cache export."""
        self._session = None
        if self._tmpdir is not None:
            import shutil

            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # -- phases ------------------------------------------------------------
    def prepare(self) -> None:
        """Build the model and export it (or take the given file). Errors propagate.

        The file to check is ``onnx=`` or the spec's ``@FILE.onnx``; such a file is only read.
        """
        from .export import export_onnx, resolve_model

        o, r = self.options, self.result
        t = time.perf_counter()
        self.progress("build")
        onnx_arg = self.onnx_arg if self.onnx_arg is not None else _spec_onnx_file(self.model_arg, o.weights)
        from .matrix import build_model, check_variant, variant_dict

        self.model = self.prebuilt if self.prebuilt is not None else build_model(self.model_arg, o) if o.dynamic_size else \
            resolve_model(self.model_arg, weights=o.weights, seed=o.seed)
        r.variant = variant_dict(o, self.model)
        check_variant(self.model, o)  # VariantSkip: a variant this model or machine cannot run
        spec = getattr(self.model, "onnx_parity_spec", None)
        r.weights = spec.weights if spec is not None else (o.weights or "given module")
        r.timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if onnx_arg is None:
            self.progress("export")
            path = None
            if not o.use_cache:
                import tempfile

                self._tmpdir = tempfile.mkdtemp(prefix="onnx-parity-")
                path = Path(self._tmpdir) / "model.onnx"
            self.export = export_onnx(self.model, path, exporter=o.exporter, opset=o.opset, cache_dir=o.cache_dir,
                                      use_cache=o.use_cache, seed=o.seed, dynamic_size=o.dynamic_size)
            from .matrix import variant_export

            self.export, self.model_part = variant_export(self.export, o, workdir=self._tmpdir)
            self.embedded = o.embed_preprocessing
            self.progress("cache hit" if self.export.cache_hit else f"exported in {self.export.export_s:.1f}s")
        else:
            self.export = self._take_file(onnx_arg)
        if onnx_arg is None:
            r.exporter = self.export.exporter or r.exporter
        else:  # made elsewhere: what the file says, never the exporter option (which made nothing here)
            r.exporter = _given_file_exporter(self.export)
            if r.variant is not None:
                r.variant["exporter"] = r.exporter
        r.opset = self.export.opset or _file_opset(self.export.path)
        r.cache_hit = self.export.cache_hit
        r.onnx_path = str(self.export.path if onnx_arg is None else self.export.path.resolve())  # as the shell and gate
        r.timings["export_s"] = self.export.export_s if onnx_arg is None and not self.export.cache_hit else 0.0
        r.timings["prepare_s"] = time.perf_counter() - t

    def _take_file(self, onnx_arg: Any) -> "OnnxExport":
        """A file made elsewhere, read (never written): its metadata, and an image input the checks can feed."""
        from .dataconfig import read_data_config, read_metadata, read_provenance, resolve_data_config
        from .errors import OnnxFileError
        from .export import OnnxExport
        from .forward import choose_logits_output, image_input_problem

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
        export = OnnxExport(path=path, data_config=cfg, provenance=read_provenance(path))
        self.export = export
        self._given_file = True
        assert self.model is not None
        from .matrix import adopt_given_file

        adopt_given_file(self, path)  # precision and embedded preprocessing from the file's metadata
        problem = None if self.embedded else image_input_problem(
            self.session(), channels=int(resolve_data_config(self.model)["input_size"][0]))
        if problem:
            raise OnnxFileError(f"{path}: {problem}")
        try:
            choose_logits_output(self.session(), getattr(self.model, "num_classes", None), self.options.output)
        except OnnxFileError as exc:
            raise OnnxFileError(f"{path}: {exc}") from None
        return export

    def session(self) -> "onnxruntime.InferenceSession":
        if self._session is None:
            from .export import make_session

            assert self.export is not None
            self._session = make_session(self.export.path, ort_opt=self.options.ort_opt, provider=self.options.provider)
        return self._session

    def run_checks(self) -> ParityResult:
        o, r = self.options, self.result
        assert self.model is not None and self.export is not None
        from .dataconfig import DATA_CONFIG_FIELDS, resolve_data_config

        t = time.perf_counter()
        self.progress("checks")
        model_cfg = resolve_data_config(self.model)
        r.data_config = {k: model_cfg[k] for k in DATA_CONFIG_FIELDS}
        self._check_weights()
        self._guard("data_config", lambda: self._check_data_config(model_cfg))
        fixed = self._fixed_batch()
        from .dataconfig import sized_config
        from .embedded import feed_for

        self._feed = feed_for(self.embedded)  # float32 batches, or uint8 pixels for a file with embedded preprocessing
        x, self._raw = self._feed.batch(sized_config(model_cfg, o.image_size),
                                        fixed * -(-o.batch_size // fixed) if fixed else o.batch_size, o.seed)
        self._inputs = x
        expected = torch_forward(self.model, x)
        actual = self._guard_value("logits", lambda: self._ort_logits(x, expected))
        if actual is not None and o.precision == "int8":
            why = "not run: an int8 file is judged by top-1 agreement and accuracy on real images (see real_images)"
            r.checks += [CheckResult("logits", "skipped", why), CheckResult("topk", "skipped", why)]
            self._guard("batch_consistency", lambda: self._check_batch(x, actual))
        elif actual is not None:
            self._check_logits(expected, actual)
            self._check_topk(expected, actual)
            if fixed:
                r.checks.append(CheckResult("batch_consistency", "skipped",
                                            f"not run: batch fixed at {fixed} in the file, so every sample runs in a "
                                            f"batch of {fixed}", {"fixed_batch": fixed}))
            else:
                self._guard("batch_consistency", lambda: self._check_batch(x, actual))
        else:
            for name in ("topk", "batch_consistency"):
                r.checks.append(CheckResult(name, "skipped", "not run: ONNX Runtime could not run the file (see logits)"))
        if not o.real_images:
            r.checks.append(CheckResult("real_images", "skipped", "real-image check turned off"))
        elif self.onnx_file_given and not self.export.data_config:
            r.checks.append(CheckResult("real_images", "skipped", "not run: the file carries no data config, so "
                                        "nothing says how to preprocess a photo for it (see data_config)"))
        else:
            self._guard("real_images", self._check_real_images)
        graph_failed = any(c.status in ("failed", "error") for c in r.checks if c.name in ("logits", "topk", "batch_consistency"))
        if o.precision == "int8":
            r.checks.append(CheckResult("layers", "skipped", "not run: an int8 file departs from torch by whole "
                                        "quantisation steps in every layer by design; its verdict is real_images"))
        elif o.layers == "always" or (o.layers == "on-failure" and graph_failed):
            self._guard("layers", lambda: self._check_layers(x))
        else:
            why = "--onnx-parity-layers never" if o.layers == "never" else "logits passed (--onnx-parity-layers on-failure)"
            r.checks.append(CheckResult("layers", "skipped", f"not run: {why}"))
        self._point_at_weights()
        r.timings["checks_s"] = time.perf_counter() - t
        statuses = {c.status for c in r.checks}
        r.status = "failed" if "failed" in statuses else "error" if "error" in statuses else "passed"
        if r.status == "passed" and "passed" not in statuses:
            r.checks.append(CheckResult("evidence", "error", "nothing was compared: every check was skipped"))
            r.status = "error"
        if r.status == "error":
            r.error = "; ".join(f"{c.name}: {c.message.splitlines()[0]}" for c in r.checks if c.status == "error")
        r.timings["total_s"] = time.perf_counter() - self._t0
        return r

    # -- checks ------------------------------------------------------------
    def _guard(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except OnnxParityError as exc:
            self.result.checks.append(CheckResult(name, "error", str(exc)))

    def _guard_value(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except OnnxParityError as exc:
            self.result.checks.append(CheckResult(name, "error", str(exc)))
            return None

    @property
    def onnx_file_given(self) -> bool:
        """True when the run checks a file made elsewhere (``onnx=`` or ``@FILE``), not its own export."""
        return self._given_file

    def _fixed_batch(self) -> int | None:
        """The batch size fixed in a given file (None: dynamic, or the plugin's own export)."""
        from .forward import fixed_batch

        return fixed_batch(self.session()) if self.onnx_file_given else None

    def _ort_logits(self, x: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """ONNX Runtime's logits on ``x``; an output of another shape than torch's logits is an error naming the fix."""
        from .errors import OnnxFileError
        from .forward import logits_output

        actual = self._feed.run(self.session(), self._raw)
        if actual.shape != expected.shape:
            session = self.session()
            outs = ", ".join(f"{o.name!r} {list(o.shape)}" for o in session.get_outputs())
            raise OnnxFileError(
                f"the file's output {logits_output(session, getattr(self.model, 'num_classes', None), self.options.output)!r} "
                f"gives shape {tuple(actual.shape)}; torch's logits have shape {tuple(expected.shape)}. "
                f"The file's outputs: {outs}. Name the logits output (output=NAME, --onnx-parity-output NAME), "
                "or check that the file was exported from this model.")
        return actual

    def _tolerance(self, expected: np.ndarray) -> tuple[float | None, float | None]:
        """The logits tolerance: given, or the precision's profile (fp16), or None for the float32 defaults."""
        from .tolerances import precision_logits_tolerance

        if self.options.atol is not None or self.options.precision != "fp16":
            # given; or None: compare_logits' float32 defaults (fp32; and int8, whose logits are never compared
            # with torch's, but whose batch check compares the file with itself)
            return self.options.atol, self.options.rtol
        return precision_logits_tolerance(self.options.precision, expected)

    def _point_at_weights(self) -> None:
        """When the weights check failed, the behaviour checks' failures say so first (not "loosen a tolerance")."""
        weights = self.result.check("weights")
        if weights is None or weights.status != "failed":
            return
        for c in self.result.checks:
            if c.name in ("logits", "topk", "batch_consistency", "real_images", "layers") and c.status == "failed":
                c.message = ("The weights check failed: the file's weights differ from the model's, so this difference "
                             "is expected and no tolerance fixes it; fix the weights first (see weights).\n" + c.message)

    def _check_weights(self) -> None:
        """The ``weights`` check, first of every result: the file's initializers against the model's parameters."""
        assert self.model is not None and self.export is not None
        from .weightcheck import compare_weights

        try:
            cmp = compare_weights(self.model, self.export.path)
        except OnnxParityError as exc:
            self.result.checks.append(CheckResult("weights", "error", str(exc)))
            return
        d = cmp.to_dict()
        details = {k: v for k, v in d.items() if k not in ("name", "status", "message")}
        self.result.checks.append(CheckResult("weights", cmp.status, cmp.message, details))

    def _check_data_config(self, model_cfg: dict[str, Any]) -> None:
        from .dataconfig import diff_data_configs, read_data_config

        assert self.export is not None
        try:
            file_cfg = read_data_config(self.export.path)
        except MissingMetadataError as exc:
            self.result.checks.append(CheckResult(
                "data_config", "failed",
                f"{exc}\nFor this model: onnx-parity stamp {self.export.path} --model {_model_label(self.model)}\n"
                "Without it a deployment has to guess mean, std, crop and interpolation "
                f"(this model wants {_cfg_brief(model_cfg)}).", {"model": model_cfg, "file": None}))
            return
        diffs = diff_data_configs(model_cfg, file_cfg)
        if diffs:
            msg = ("The ONNX file's data config differs from the model's own, so a deployment that reads it "
                   "preprocesses differently from training:\n  " + "\n  ".join(diffs) +
                   "\nRe-export with pytest_onnx_parity.export_onnx, or write the model's own config into the file: "
                   f"onnx-parity stamp {self.export.path} --model NAME (pytest_onnx_parity.stamp_onnx).")
            self.result.checks.append(CheckResult("data_config", "failed", msg,
                                                  {"differs": [d.split(":")[0] for d in diffs], "model": model_cfg, "file": file_cfg}))
        else:
            self.result.checks.append(CheckResult("data_config", "passed", "data config in the file equals the model's",
                                                  {"model": model_cfg}))

    def _check_logits(self, expected: np.ndarray, actual: np.ndarray) -> None:
        from .compare import compare_logits
        from .conditioning import first_nonfinite_module

        r = self.result
        assert self.model is not None
        atol, rtol = self._tolerance(expected)
        cmp = compare_logits(expected, actual, atol=atol, rtol=rtol)
        r.max_abs_diff = cmp.max_abs_diff
        finite = expected[np.isfinite(expected)]
        scale = logit_rms(expected)
        details = {**cmp.to_dict(), "logit_rms": scale, "batch": int(expected.shape[0])}
        title = "Logits on a random batch are not close!"
        if cmp.expected_nonfinite:
            where = first_nonfinite_module(self.model, self._inputs)
            details["first_nonfinite_module"] = where
            origin = f", first produced by module {where}" if where else ""
            r.checks.append(CheckResult(
                "logits", "error",
                f"inconclusive: torch's own logits hold NaN or Inf{origin}, so no comparison with them can pass or "
                "fail the export. Check the model with other weights (NAME=pretrained or NAME=/path/to/checkpoint) "
                f"or inputs.\n\n{cmp.message(title)}", details))
            return
        if float(finite.std()) < 1e-6:
            r.checks.append(CheckResult("logits", "failed",
                                        f"torch logits are constant (std {float(finite.std()):.2g}): this check cannot fail, "
                                        "so it does not pass. Use =random weights (made non-degenerate) or real weights.", details))
            return
        if not cmp.passed:
            verdict = self._arbitrate(self._inputs, expected, cmp.max_abs_diff, cmp.atol, details)
            if verdict is not None:
                r.checks.append(CheckResult("logits", "error", f"{verdict}\n\n{cmp.message(title)}", details))
                return
        r.checks.append(CheckResult("logits", "passed" if cmp.passed else "failed", cmp.message(title), details))

    def _arbitrate(self, x: np.ndarray, expected: np.ndarray | None, delta: float, atol: float,
                   details: dict[str, Any], module: str | None = None) -> str | None:
        """After a failed comparison: the "inconclusive" message when float rounding explains ``delta``, else None.

        Evidence (see :mod:`.conditioning`): torch's own sensitivity to a 1e-6 input change, and
        torch float32's own error against float64 at the same place. Both go into ``details``.
        """
        from .conditioning import float64_arbitration
        from .tolerances import ARBITRATION_FACTOR

        assert self.model is not None
        if not np.isfinite(delta):
            return None
        own = torch_sensitivity(self.model, x, expected, self.options.seed) if expected is not None else 0.0
        arb = float64_arbitration(self.model, x, delta, module=module)
        if expected is not None:
            details["torch_self_sensitivity"] = own
        details["float64"] = arb.to_dict()
        noise = max(own, arb.own)
        if delta > (ARBITRATION_FACTOR + 1.0) * noise:
            return None
        self._inconclusive = True
        return (f"inconclusive: ONNX Runtime departs from torch by {delta:.3g} (tolerance {atol:.3g}) at {arb.where}, but "
                f"the torch model itself is that unstable: its float32 output there differs from float64 by "
                f"{arb.own:.3g}" + (f", and moves by {own:.3g} for an input change of 1e-6" if expected is not None else "") +
                f". The export is blamed only beyond {ARBITRATION_FACTOR + 1:g}x that. These weights make the model "
                "ill-conditioned; check it with pretrained or checkpoint weights (NAME=pretrained or NAME=/path/to/weights).")

    def _check_topk(self, expected: np.ndarray, actual: np.ndarray) -> None:
        from .compare import compare_topk

        o, r = self.options, self.result
        if not (np.isfinite(expected).all() and np.isfinite(actual).all()):
            r.checks.append(CheckResult("topk", "skipped", "not run: the logits hold NaN or Inf (see logits)"))
            return
        atol, rtol = self._tolerance(expected)
        cmp = compare_topk(expected, actual, k=o.topk, min_agreement=o.min_agreement, atol=atol, rtol=rtol)
        r.top1_agreement = cmp.top1_agreement
        status = "passed" if cmp.passed else "failed"
        message = cmp.message()
        if not cmp.passed and self._inconclusive:
            status = "error"
            message = "inconclusive: the logits check found the model ill-conditioned (see logits)\n\n" + message
        r.checks.append(CheckResult("topk", status, message, cmp.to_dict()))

    def _check_batch(self, x: np.ndarray, batched: np.ndarray) -> None:
        from .compare import compare_logits

        if not np.isfinite(batched).all():
            self.result.checks.append(CheckResult("batch_consistency", "skipped",
                                                  "not judged: the ONNX outputs hold NaN or Inf (see logits)"))
            return
        picks = [x.shape[0] - 1]  # the last sample alone: a batch size baked into the graph shows
        singles = np.concatenate([self._feed.run(self.session(), self._feed.one(self._raw, i)) for i in picks])
        atol, rtol = self._tolerance(batched)
        cmp = compare_logits(batched[picks], singles, atol=atol, rtol=rtol)
        msg = (f"sample {picks[0]} run alone equals its output inside a batch of {x.shape[0]}" if cmp.passed else
               cmp.message(f"Outputs depend on the batch: sample {picks[0]} alone differs from the same sample in a batch of {x.shape[0]} "
                           "(a batch size baked into the graph?)"))
        self.result.checks.append(CheckResult("batch_consistency", "passed" if cmp.passed else "failed", msg,
                                              {"samples": picks, "max_abs_diff": cmp.max_abs_diff}))

    def _check_real_images(self) -> None:
        from .matrix import real_images_check

        assert self.model is not None and self.export is not None
        self.result.checks.append(real_images_check(self))

    def _check_layers(self, x: np.ndarray) -> None:
        from .layers import compare_layers
        from .layers.verdict import coverage, coverage_problem

        assert self.model is not None and self.export is not None
        o, r = self.options, self.result
        kwargs: dict[str, Any] = {}
        if o.layer_memory is not None:
            kwargs["memory_budget"] = o.layer_memory
        from .tolerances import precision_layer_tolerance

        kwargs.update(precision_layer_tolerance(o.precision) if o.atol is None else {})
        cmp = compare_layers(self.model, self.model_part or self.export.path, x[:1], **kwargs)
        r.layer_comparison = cmp
        details = cmp.to_dict()
        compared, comparable = coverage(len(cmp.layers), cmp.uncompared)
        details["coverage"] = {"compared": compared, "comparable": comparable}
        first = cmp.first_divergence
        if first is None:
            thin = coverage_problem(len(cmp.layers), cmp.uncompared, cmp.note)
            if thin:
                r.checks.append(CheckResult("layers", "skipped", f"not judged: {thin}", details))
                return
            msg = f"{compared} of {comparable} computing modules compared, no divergence"
            if comparable > compared:
                msg += f"; {comparable - compared} could not be compared (see details)"
            r.checks.append(CheckResult("layers", "passed", msg, details))
            return
        r.first_divergence = first.name
        text = f"{cmp.summary()}\n{cmp.table()}"
        verdict = self._arbitrate(x[:1], None, first.max_abs_diff, first.tolerance, details, module=first.name)
        if verdict is not None:
            r.checks.append(CheckResult("layers", "error", f"{verdict}\n\n{text}", details))
            return
        r.checks.append(CheckResult("layers", "failed", f"{text}\n{details['float64']['where']}: "
                                    "ONNX Runtime's error is well beyond torch float32's own (float64 check)", details))


def _spec_onnx_file(model: Any, weights: str | None) -> str | None:
    """The ``@FILE.onnx`` of a spec (string or ModelSpec), or None."""
    if isinstance(model, str):
        from .specs import parse_spec

        return parse_spec(model, default_weights=weights or "random").onnx_file
    return getattr(model, "onnx_file", None) if type(model).__name__ == "ModelSpec" else None


def _model_label(model: Any) -> str:
    from .models import model_name

    return model_name(model)


def _given_file_exporter(export: OnnxExport) -> str | None:
    """The exporter that made a given file: its provenance metadata (plugin exports), else what its graph
    shows (dynamo's scope metadata, TorchScript's ``/module/path`` node names), else None (unknown)."""
    from .dataconfig import load_onnx_proto
    from .layers.scopes import detect_exporter

    said = export.provenance.get("exporter")
    if said in ("dynamo", "torchscript"):
        return str(said)
    seen = detect_exporter(list(load_onnx_proto(export.path).graph.node))
    return None if seen == "unknown" else seen


def _file_opset(path: Path) -> int | None:
    from .dataconfig import load_onnx_proto

    proto = load_onnx_proto(path)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _cfg_brief(cfg: dict[str, Any]) -> str:
    return (f"input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}, "
            f"crop_pct {cfg['crop_pct']}, {cfg['interpolation']}, crop_mode {cfg['crop_mode']}")


def check_parity(model: Any, onnx: Any = None, *, raise_errors: bool = False,
                 progress: Callable[[str], None] | None = None, **options: Any) -> ParityResult:
    """Everything one gate item checks; see the module docstring.

    ``model`` is a spec string or a timm ``nn.Module``; with ``onnx=`` (a path), or a
    spec ``NAME[=WEIGHTS]@FILE.onnx``, that file is checked instead of a fresh export
    (only read; see docs/shipped-file.md). Options: exporter, opset,
    weights, seed, atol, rtol (together), batch_size, topk, min_agreement,
    cache_dir, use_cache, images, real_images, layers, layer_memory, test_time,
    output (the logits output of a file with several).
    A model that cannot be built or exported gives ``status == "error"`` with
    the reason in ``.error`` (``raise_errors=True`` raises instead).
    """
    run = ParityRun(model, onnx, ParityOptions.from_kwargs(**options), progress=progress)
    try:
        run.prepare()
    except OnnxParityError as exc:
        run.close()
        if raise_errors:
            raise
        run.result.status = "error"
        run.result.error = str(exc)
        run.result.timings["total_s"] = time.perf_counter() - run._t0
        return run.result
    try:
        return run.run_checks()
    finally:
        run.close()

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

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import MissingMetadataError, OnnxParityError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from .export import OnnxExport

LAYER_MODES = ("always", "on-failure", "never")


@dataclass
class CheckResult:
    name: str
    status: str  # passed | failed | skipped | error
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, **_jsonable(self.details)}


@dataclass
class ParityResult:
    model: str
    status: str = "error"  # passed | failed | error
    exporter: str | None = None
    opset: int | None = None
    weights: str | None = None
    data_config: dict[str, Any] | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    first_divergence: str | None = None
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    onnx_path: str | None = None
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    layer_comparison: Any = None  # a LayerComparison when the layer check ran

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def failure_message(self) -> str:
        if self.status == "error" and not any(c.status == "error" for c in self.checks):
            return f"{self.model}: {self.error}"
        if self.status == "error":
            parts = [f"{self.model}: inconclusive ({', '.join(c.name for c in self.checks if c.status == 'error')})"]
            parts += [f"--- {c.name} ---\n{c.message}" for c in self.checks if c.status == "error"]
            return "\n\n".join(parts)
        failed = [c for c in self.checks if c.status in ("failed", "error")]
        parts = [f"{self.model}: ONNX export does not behave like the torch model "
                 f"({', '.join(c.name for c in failed)} failed)"]
        if self.first_divergence and self.layer_comparison is not None and hasattr(self.layer_comparison, "summary"):
            parts.append(self.layer_comparison.summary())
        for c in failed:
            parts.append(f"--- {c.name} ---\n{c.message}")
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "model": self.model, "status": self.status, "exporter": self.exporter, "opset": self.opset,
            "weights": self.weights, "data_config": self.data_config, "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement, "first_divergence": self.first_divergence,
            "cache_hit": self.cache_hit, "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "onnx_path": self.onnx_path, "error": self.error, "checks": [c.to_dict() for c in self.checks],
        })


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else str(v)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


@dataclass
class ParityOptions:
    exporter: str = "dynamo"
    opset: int | None = None
    weights: str | None = None
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    batch_size: int = 2
    topk: int = 5
    min_agreement: float = 1.0
    cache_dir: str | None = None
    use_cache: bool = True
    images: str | None = None  # folder of real images; None: the bundled photos
    real_images: bool = True
    layers: str = "always"
    layer_memory: int | None = None
    test_time: bool = False
    max_accuracy_drop: float = 0.1

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ParityOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise SpecError(f"unknown parity option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        opts = cls(**{k: v for k, v in kwargs.items() if v is not None or k in ("opset", "atol", "rtol", "weights", "images", "cache_dir", "layer_memory")})
        if opts.layers not in LAYER_MODES:
            raise SpecError(f"layers={opts.layers!r}: choose one of {', '.join(LAYER_MODES)}")
        if (opts.atol is None) != (opts.rtol is None):
            raise SpecError(f"give atol and rtol together or not at all (got atol={opts.atol}, rtol={opts.rtol})")
        return opts


class ParityRun:
    """One model's gate run, in phases the gate item can time and report separately."""

    def __init__(self, model: Any, onnx: Any = None, options: ParityOptions | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.options = options or ParityOptions()
        self.model_arg = model
        self.onnx_arg = onnx
        self.progress = progress or (lambda msg: None)
        label = model if isinstance(model, str) else str(model) if type(model).__name__ == "ModelSpec" else _model_label(model)
        self.result = ParityResult(model=str(label), exporter=None if onnx is not None else self.options.exporter)
        self.model: "torch.nn.Module | None" = None
        self.export: "OnnxExport | None" = None
        self._session: "onnxruntime.InferenceSession | None" = None
        self._tmpdir: str | None = None
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
        """Build the model and export it (or take the given file). Errors propagate."""
        from .export import OnnxExport, export_onnx, resolve_model

        o, r = self.options, self.result
        t = time.perf_counter()
        self.progress("build")
        self.model = resolve_model(self.model_arg, weights=o.weights, seed=o.seed)
        spec = getattr(self.model, "onnx_parity_spec", None)
        r.weights = spec.weights if spec is not None else (o.weights or "given module")
        r.timings["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        if self.onnx_arg is None:
            self.progress("export")
            path = None
            if not o.use_cache:
                import tempfile

                self._tmpdir = tempfile.mkdtemp(prefix="onnx-parity-")
                path = Path(self._tmpdir) / "model.onnx"
            self.export = export_onnx(self.model, path, exporter=o.exporter, opset=o.opset, cache_dir=o.cache_dir,
                                      use_cache=o.use_cache, seed=o.seed)
            self.progress("cache hit" if self.export.cache_hit else f"exported in {self.export.export_s:.1f}s")
        else:
            from .dataconfig import read_metadata, read_provenance

            path = Path(self.onnx_arg) if not hasattr(self.onnx_arg, "graph") else None
            if path is None:
                raise SpecError("check_parity(onnx=...) takes the path of an ONNX file")
            read_metadata(path)  # parses the file: a clear error for missing or corrupt files
            try:
                from .dataconfig import read_data_config

                cfg = read_data_config(path)
            except MissingMetadataError:
                cfg = {}
            self.export = OnnxExport(path=path, data_config=cfg, provenance=read_provenance(path))
        r.exporter = self.export.exporter or r.exporter
        r.opset = self.export.opset or _file_opset(self.export.path)
        r.cache_hit = self.export.cache_hit
        r.onnx_path = str(self.export.path)
        r.timings["export_s"] = self.export.export_s if self.onnx_arg is None and not self.export.cache_hit else 0.0
        r.timings["prepare_s"] = time.perf_counter() - t

    def session(self) -> "onnxruntime.InferenceSession":
        if self._session is None:
            from .export import make_session

            assert self.export is not None
            self._session = make_session(self.export.path)
        return self._session

    def run_checks(self) -> ParityResult:
        o, r = self.options, self.result
        assert self.model is not None and self.export is not None
        from .dataconfig import resolve_data_config

        t = time.perf_counter()
        self.progress("checks")
        model_cfg = resolve_data_config(self.model)
        r.data_config = {k: model_cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}
        self._guard("data_config", lambda: self._check_data_config(model_cfg))
        x = random_batch(model_cfg, o.batch_size, o.seed)
        self._inputs = x
        expected = torch_forward(self.model, x)
        actual = self._guard_value("logits", lambda: ort_forward(self.session(), x))
        if actual is not None:
            self._check_logits(expected, actual)
            self._check_topk(expected, actual)
            self._guard("batch_consistency", lambda: self._check_batch(x, actual))
        if o.real_images:
            self._guard("real_images", self._check_real_images)
        else:
            r.checks.append(CheckResult("real_images", "skipped", "real-image check turned off"))
        graph_failed = any(c.status in ("failed", "error") for c in r.checks if c.name in ("logits", "topk", "batch_consistency"))
        if o.layers == "always" or (o.layers == "on-failure" and graph_failed):
            self._guard("layers", lambda: self._check_layers(x))
        else:
            why = "--onnx-parity-layers never" if o.layers == "never" else "logits passed (--onnx-parity-layers on-failure)"
            r.checks.append(CheckResult("layers", "skipped", f"not run: {why}"))
        r.timings["checks_s"] = time.perf_counter() - t
        statuses = {c.status for c in r.checks}
        r.status = "failed" if "failed" in statuses else "error" if "error" in statuses else "passed"
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

    def _check_data_config(self, model_cfg: dict[str, Any]) -> None:
        from .dataconfig import diff_data_configs, read_data_config

        assert self.export is not None
        try:
            file_cfg = read_data_config(self.export.path)
        except MissingMetadataError as exc:
            self.result.checks.append(CheckResult(
                "data_config", "failed",
                f"{exc}\nWithout it a deployment has to guess mean, std, crop and interpolation "
                f"(this model wants {_cfg_brief(model_cfg)}).", {"model": model_cfg, "file": None}))
            return
        diffs = diff_data_configs(model_cfg, file_cfg)
        if diffs:
            msg = ("The ONNX file's data config differs from the model's own, so a deployment that reads it "
                   "preprocesses differently from training:\n  " + "\n  ".join(diffs) +
                   "\nRe-export with pytest_onnx_parity.export_onnx, or fix the file's metadata "
                   "(pytest_onnx_parity.export.write_metadata).")
            self.result.checks.append(CheckResult("data_config", "failed", msg,
                                                  {"differs": [d.split(":")[0] for d in diffs], "model": model_cfg, "file": file_cfg}))
        else:
            self.result.checks.append(CheckResult("data_config", "passed", "data config in the file equals the model's",
                                                  {"model": model_cfg}))

    def _check_logits(self, expected: np.ndarray, actual: np.ndarray) -> None:
        from .compare import compare_logits

        o, r = self.options, self.result
        cmp = compare_logits(expected, actual, atol=o.atol, rtol=o.rtol)
        r.max_abs_diff = cmp.max_abs_diff
        scale = float(np.sqrt(np.mean(expected.astype(np.float64) ** 2)))
        details = {**cmp.to_dict(), "logit_rms": scale, "batch": int(expected.shape[0])}
        if float(expected.std()) < 1e-6:
            r.checks.append(CheckResult("logits", "failed",
                                        f"torch logits are constant (std {float(expected.std()):.2g}): this check cannot fail, "
                                        "so it does not pass. Use =random weights (made non-degenerate) or real weights.", details))
            return
        if not cmp.passed:
            # is the torch model itself that sensitive? then rounding, not the export, is to blame
            x = self._inputs
            noise = np.random.default_rng(o.seed + 1).standard_normal(x.shape).astype(np.float32) * np.float32(1e-6)
            own = float(np.abs(torch_forward(self.model, x + noise * np.abs(x).max()) - expected).max())  # type: ignore[arg-type]
            details["torch_self_sensitivity"] = own
            if own > cmp.atol:
                r.checks.append(CheckResult(
                    "logits", "error",
                    f"inconclusive: the torch model itself moves its logits by {own:.3g} for an input change of 1e-6 "
                    f"(more than the tolerance {cmp.atol:.3g}), so float rounding alone explains differences of that "
                    "size. These weights make the model ill-conditioned; check it with pretrained or checkpoint weights "
                    f"(NAME=pretrained or NAME=/path/to/weights).\n\n{cmp.message('Logits on a random batch are not close!')}",
                    details))
                return
        r.checks.append(CheckResult("logits", "passed" if cmp.passed else "failed",
                                    cmp.message("Logits on a random batch are not close!"), details))

    def _check_topk(self, expected: np.ndarray, actual: np.ndarray) -> None:
        from .compare import compare_topk

        o, r = self.options, self.result
        cmp = compare_topk(expected, actual, k=o.topk, min_agreement=o.min_agreement, atol=o.atol, rtol=o.rtol)
        r.top1_agreement = cmp.top1_agreement
        r.checks.append(CheckResult("topk", "passed" if cmp.passed else "failed", cmp.message(), cmp.to_dict()))

    def _check_batch(self, x: np.ndarray, batched: np.ndarray) -> None:
        from .compare import compare_logits

        o = self.options
        picks = [x.shape[0] - 1]  # the last sample alone: a batch size baked into the graph shows
        singles = np.concatenate([ort_forward(self.session(), x[i:i + 1]) for i in picks])
        cmp = compare_logits(batched[picks], singles, atol=o.atol, rtol=o.rtol)
        msg = (f"sample {picks[0]} run alone equals its output inside a batch of {x.shape[0]}" if cmp.passed else
               cmp.message(f"Outputs depend on the batch: sample {picks[0]} alone differs from the same sample in a batch of {x.shape[0]} "
                           "(a batch size baked into the graph?)"))
        self.result.checks.append(CheckResult("batch_consistency", "passed" if cmp.passed else "failed", msg,
                                              {"samples": picks, "max_abs_diff": cmp.max_abs_diff}))

    def _check_real_images(self) -> None:
        from .realcheck import check_real_images

        assert self.model is not None and self.export is not None
        self.result.checks.append(check_real_images(self.model, self.export.path, self.session(), self.options, self.progress))

    def _check_layers(self, x: np.ndarray) -> None:
        from .layers import compare_layers

        assert self.model is not None and self.export is not None
        o, r = self.options, self.result
        kwargs: dict[str, Any] = {}
        if o.layer_memory is not None:
            kwargs["memory_budget"] = o.layer_memory
        cmp = compare_layers(self.model, self.export.path, x[:1], **kwargs)
        r.layer_comparison = cmp
        first = cmp.first_divergence
        r.first_divergence = first.name if first is not None else None
        details = cmp.to_dict() if hasattr(cmp, "to_dict") else {}
        if first is None:
            msg = f"{len(cmp.layers)} layers compared, no divergence"
            if getattr(cmp, "uncompared", None):
                msg += f"; {len(cmp.uncompared)} modules could not be compared (see details)"
            r.checks.append(CheckResult("layers", "passed", msg, details))
        else:
            summary = cmp.summary() if hasattr(cmp, "summary") else f"first divergence at {first.name}"
            table = cmp.table() if hasattr(cmp, "table") else ""
            r.checks.append(CheckResult("layers", "failed", f"{summary}\n{table}", details))


def _model_label(model: Any) -> str:
    from .models import model_name

    return model_name(model)


def _file_opset(path: Path) -> int | None:
    from .dataconfig import load_onnx_proto

    proto = load_onnx_proto(path)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _cfg_brief(cfg: dict[str, Any]) -> str:
    return (f"input {tuple(cfg['input_size'])}, mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}, "
            f"crop_pct {cfg['crop_pct']}, {cfg['interpolation']}, crop_mode {cfg['crop_mode']}")


def random_batch(config: dict[str, Any], batch_size: int = 4, seed: int = 0) -> np.ndarray:
    """Seeded random pixels in [0, 1], normalised with the config's mean and std (float32 NCHW)."""
    c, h, w = config["input_size"]
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, c, h, w), dtype=np.float32)
    mean = np.asarray(config["mean"][:c], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(config["std"][:c], np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def torch_forward(model: "torch.nn.Module", x: Any) -> np.ndarray:
    import torch

    from .compare import to_numpy

    with torch.no_grad():
        out = model(torch.as_tensor(to_numpy(x)))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().numpy()


def ort_forward(session: "onnxruntime.InferenceSession", x: Any) -> np.ndarray:
    from .compare import to_numpy
    from .errors import OnnxFileError

    name = session.get_inputs()[0].name
    try:
        return session.run(None, {name: np.ascontiguousarray(to_numpy(x), dtype=np.float32)})[0]
    except Exception as exc:
        raise OnnxFileError(f"ONNX Runtime failed to run the file on input {tuple(np.shape(x))}: "
                            f"{type(exc).__name__}: {str(exc).strip()[:500]}") from exc


def check_parity(model: Any, onnx: Any = None, *, raise_errors: bool = False,
                 progress: Callable[[str], None] | None = None, **options: Any) -> ParityResult:
    """Everything one gate item checks; see the module docstring.

    ``model`` is a spec string or a timm ``nn.Module``; with ``onnx=`` (a path)
    that file is checked instead of a fresh export. Options: exporter, opset,
    weights, seed, atol, rtol (together), batch_size, topk, min_agreement,
    cache_dir, use_cache, images, real_images, layers, layer_memory, test_time.
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

"""Export a timm model to ONNX with its data config and provenance inside.

Both of torch's exporters are supported: ``dynamo`` (``torch.onnx.export(...,
dynamo=True)``, needs onnxscript; the default) and ``torchscript``
(``dynamo=False``). The batch axis is dynamic. The file's ``metadata_props``
carry ``onnx_parity.data_config`` and ``onnx_parity.provenance`` as JSON (see
:mod:`pytest_onnx_parity.preprocessing.dataconfig`). Models whose weights exceed 2 GB are saved
with external data (``model.onnx.data`` beside the file).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..axes import EXPORTERS
from ..errors import ExportError
from ..model.record import LoadedModel
from ..runtime.environment import library_versions
from ..runtime.session import make_session
from ..specs import ModelSpec
from .io import EXTERNAL_DATA_THRESHOLD, copy_onnx, move_onnx
from .metadata import metadata_props, read_data_config, read_provenance, write_metadata

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch


EXPORT_BATCH = 2
INPUT_NAME = "input"
#: the output of a classifier; an embedding's is ``embedding``, features' ``features_0``, ``features_1``, ...
#: (:func:`~..runtime.outputs.export_output_names`)
OUTPUT_NAME = "logits"


@dataclass
class OnnxExport:
    """An exported ONNX file and what is known about it."""

    path: Path
    data_config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    export_s: float = 0.0
    cache_key: str | None = None

    @property
    def exporter(self) -> str | None:
        return self.provenance.get("exporter")

    @property
    def opset(self) -> int | None:
        return self.provenance.get("opset")

    def session(self, **kwargs: Any) -> "onnxruntime.InferenceSession":
        """An ONNX Runtime CPU session on this file."""
        return make_session(self.path, **kwargs)


def resolve_model(model: "str | ModelSpec | torch.nn.Module | LoadedModel", *, weights: str | None = None, seed: int = 0,
                  model_args: dict[str, Any] | None = None, data_config: dict[str, Any] | None = None,
                  use_ema: bool = True) -> LoadedModel:
    """A spec built by :func:`~pytest_onnx_parity.model.build.load_model_record`, or a module (or LoadedModel)
    as given, with its record; ``data_config`` overrides go into the record, never onto a given module."""
    from ..model.build import load_model_record, loaded

    if isinstance(model, (str, ModelSpec)):
        return load_model_record(model, weights, seed=seed, model_args=model_args, data_config=data_config,
                                 use_ema=use_ema)
    if model_args:
        from ..errors import SpecError

        raise SpecError("model_args= builds a model from a spec; a module given is already built: pass the spec "
                        "string (e.g. 'resnet18') with model_args, or build the module with those arguments")
    return loaded(model, data_config)


def export_key_fields(model: LoadedModel, *, exporter: str, opset: int | None, batch: int, seed: int,
                      dynamic_size: bool = False) -> dict[str, Any]:
    from ..model.build import NONDEGENERATE_VERSION, model_name, weights_identity

    cfg = model.record.data_config
    versions = library_versions()
    versions.pop("onnxruntime", None)  # does not change the file
    return {
        "model": model_name(model),
        "weights": weights_identity(model),
        "seed": seed,
        "nondegenerate": NONDEGENERATE_VERSION,
        "exporter": exporter,
        "opset": opset,
        "input": {"shape": [batch, *cfg["input_size"]], "dtype": "float32", "dynamic_batch": True,
                  **({"dynamic_size": True} if dynamic_size else {})},
        "data_config": cfg,
        "versions": versions,
        # a module built elsewhere has no spec naming its arguments: the same weights under another head or pool
        # (resnet18(global_pool='') and resnet18(num_classes=0) share a state dict) must not share a file
        **({"structure": _structure_digest(model.module)} if model.record.spec is None else {}),
    }


def _structure_digest(module: Any) -> str:
    import hashlib

    return hashlib.sha256(repr(module).encode()).hexdigest()[:16]


def export_onnx(
    model: "str | ModelSpec | torch.nn.Module | LoadedModel",
    path: "str | os.PathLike[str] | None" = None,
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    cache_dir: "str | os.PathLike[str] | None" = None,
    use_cache: bool = True,
    weights: str | None = None,
    seed: int = 0,
    batch_size: int = EXPORT_BATCH,
    dynamic_size: bool = False,
    embed_preprocessing: bool = False,
    model_args: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    use_ema: bool = True,
) -> OnnxExport:
    """Export ``model`` (a spec string, a timm ``nn.Module``, or :func:`~pytest_onnx_parity.load_model_record`'s
    LoadedModel, whose record names the data config's source and the weights' seed) to ONNX.

    With ``use_cache`` (the default) the file is taken from, or written to, the
    export cache under ``cache_dir`` (default: ``~/.cache/pytest-onnx-parity``);
    ``path``, when given, receives a copy. Without the cache, ``path`` is required.
    ``model_args``, ``data_config`` and ``use_ema`` build a spec as
    :func:`~pytest_onnx_parity.load_model` does. ``dynamic_size``: height and width are dynamic too (a ViT must be built with
    ``dynamic_img_size=True``). ``embed_preprocessing``: the file takes uint8 pixels
    of any size, timm's eval transform in the graph (:mod:`.pregraph`); it is derived
    from the plain export and cached under its own key.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    built = resolve_model(model, weights=weights, seed=seed, model_args=model_args, data_config=data_config,
                          use_ema=use_ema)
    if embed_preprocessing:
        return _export_embedded(built, path, exporter=exporter, opset=opset, cache_dir=cache_dir, use_cache=use_cache,
                                weights=weights, seed=seed, batch_size=batch_size, dynamic_size=dynamic_size)
    torch_model = built.module
    seed = built.record.seed if built.record.spec is not None else seed
    fields = export_key_fields(built, exporter=exporter, opset=opset, batch=batch_size, seed=seed,
                               dynamic_size=dynamic_size)
    provenance = {k: fields[k] for k in ("model", "weights", "seed", "exporter", "input", "versions")}

    def build(folder: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        used_opset = _export_to(torch_model, folder / "model.onnx", exporter=exporter, opset=opset,
                                batch=batch_size, data_config=fields["data_config"], provenance=provenance,
                                dynamic_size=dynamic_size)
        return {"export_s": time.perf_counter() - t0, "opset": used_opset}

    if not use_cache:
        if path is None:
            raise ExportError("export_onnx(use_cache=False) needs a path to write to")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            extra = build(tmp)
            move_onnx(tmp / "model.onnx", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return _result(target, extra["export_s"], hit=False, key=None)

    from .cache import ONNX_NAME, ExportCache, cache_key, default_cache_dir

    cache = ExportCache(cache_dir or default_cache_dir())
    key = cache_key(fields)
    entry, manifest, hit = cache.get_or_build(key, fields["model"] + "-" + exporter, build)
    onnx_path = entry / ONNX_NAME
    if not hit:  # we wrote this metadata a moment ago: no need to parse the file for it
        from .io import remember_metadata

        remember_metadata(onnx_path, metadata_props(fields["data_config"], {**provenance, "exporter": exporter},
                                                     int(manifest.get("opset") or 0)))
    if path is not None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_onnx(onnx_path, target)
        onnx_path = target
    return _result(onnx_path, 0.0 if hit else float(manifest.get("export_s", 0.0)), hit=hit, key=key)


def _export_embedded(model: Any, path: "str | os.PathLike[str] | None", *, use_cache: bool, **kwargs: Any) -> OnnxExport:
    from .embedded import write_embedded

    if use_cache:
        base = export_onnx(model, None, use_cache=True, **kwargs)
        out = derive_export(base, {"preprocessing": "embedded", "layout": "NHWC"}, write_embedded,
                            cache_dir=kwargs.get("cache_dir"), use_cache=True)
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_onnx(out.path, target)
            out.path = target
        return out
    if path is None:
        raise ExportError("export_onnx(use_cache=False) needs a path to write to")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-embed-", dir=Path(path).parent if Path(path).parent.exists() else None))
    try:
        base = export_onnx(model, tmp / "model.onnx", use_cache=False, **kwargs)
        return derive_export(base, {"preprocessing": "embedded"}, write_embedded, use_cache=False, target=Path(path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def derive_export(base: OnnxExport, fields: dict[str, Any], make: Any, *, cache_dir: "str | os.PathLike[str] | None" = None,
                  use_cache: bool = True, workdir: "str | os.PathLike[str] | None" = None,
                  target: Path | None = None) -> OnnxExport:
    """A file derived from ``base`` by ``make(src_path, dst_path)`` (a precision, embedded preprocessing).

    Cached under the key of ``base`` plus ``fields`` when ``base`` came from the cache; otherwise
    written to ``target`` or into ``workdir``. ``export_s`` counts the export and the derivation.
    """
    tag = "-".join(str(v) for v in fields.values() if v is not None)
    if use_cache and base.cache_key is not None:
        from .cache import ONNX_NAME, ExportCache, cache_key, default_cache_dir

        def build(folder: Path) -> dict[str, Any]:
            t0 = time.perf_counter()
            make(base.path, folder / ONNX_NAME)
            return {"export_s": time.perf_counter() - t0}

        key = cache_key({"base": base.cache_key, **fields})
        label = f"{base.provenance.get('model', 'model')}-{base.exporter or 'onnx'}-{tag}"
        entry, manifest, hit = ExportCache(cache_dir or default_cache_dir()).get_or_build(key, label, build)
        out = _result(entry / ONNX_NAME, 0.0 if hit else base.export_s + float(manifest.get("export_s", 0.0)), hit=hit, key=key)
        out.cache_hit = hit and base.cache_hit
        return out
    dst = target or Path(workdir or base.path.parent) / f"model-{safe_tag(tag)}.onnx"
    t0 = time.perf_counter()
    make(base.path, dst)
    return _result(dst, base.export_s + time.perf_counter() - t0, hit=False, key=None)


def safe_tag(tag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", tag)[:60]


def _result(path: Path, export_s: float, *, hit: bool, key: str | None) -> OnnxExport:
    return OnnxExport(
        path=path,
        data_config=read_data_config(path),
        provenance=read_provenance(path),
        cache_hit=hit,
        export_s=export_s,
        cache_key=key,
    )


def _export_to(
    model: "torch.nn.Module",
    target: Path,
    *,
    exporter: str,
    opset: int | None,
    batch: int,
    data_config: dict[str, Any],
    provenance: dict[str, Any],
    dynamic_size: bool = False,
) -> int:
    """Export into ``target`` (inside a private temporary folder); return the opset used."""
    import torch

    from ..model.build import calibration_input

    gen = torch.Generator().manual_seed(0)
    x = calibration_input(data_config, gen, batch=batch)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = n_bytes > EXTERNAL_DATA_THRESHOLD
    names = _output_names(model, x)
    try:
        # exporters warn a lot (TracerWarning, deprecations); a user's filterwarnings=error must not
        # turn that noise into export failures
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                _require_onnxscript()
                program = torch.onnx.export(
                    model, (x,), dynamo=True, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=names,
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096),
                                     **({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC} if dynamic_size else {})},),
                    verbose=False,
                )
                # metadata goes in before the one save: no second parse and write of the weights
                used_opset = int(program.model.opset_imports.get("", 0))
                program.model.metadata_props.update(
                    metadata_props(data_config, {**provenance, "exporter": exporter}, used_opset))
                program.save(str(target), external_data=external)
                return used_opset
            else:
                torch.onnx.export(
                    model, (x,), str(target), dynamo=False, opset_version=opset,
                    input_names=[INPUT_NAME], output_names=names,
                    dynamic_axes={INPUT_NAME: {0: "batch", **({2: "height", 3: "width"} if dynamic_size else {})},
                                  **{name: {0: "batch"} for name in names}},
                )
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{exporter} exporter failed: {_exporter_reason(exc)}") from exc
    return write_metadata(target, data_config, provenance={**provenance, "exporter": exporter})


def _output_names(model: "torch.nn.Module", x: "torch.Tensor") -> list[str]:
    """The names of the file's outputs, by the kind of the model's output on ``x`` (one forward)."""
    import torch

    from ..runtime.outputs import export_output_names, output_kind

    with torch.no_grad():
        out = model(x)
    count = len(out) if isinstance(out, (list, tuple)) else 1
    return export_output_names(output_kind(out, getattr(model, "num_classes", None)), count)


def _require_onnxscript() -> None:
    try:
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            "the dynamo exporter needs onnxscript: pip install onnxscript, or choose --onnx-parity-exporter torchscript"
        ) from exc


def _exporter_reason(exc: BaseException) -> str:
    """The exporter's own reason, shortened: the type, the first and the most telling lines."""
    chain = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 4:
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())  # no terminal colours
        chain.append(f"{type(e).__name__}: {text[:600]}")
        e = e.__cause__ or e.__context__
    return " <- ".join(chain)




"""Files made elsewhere: stamp the model's data config into them, check them from a shell.

A team's pipeline makes the ONNX file it ships (``timm.utils.onnx.onnx_export``, a plain
``torch.onnx.export``, its own script, a simplifier after it). That file carries no data
config: :func:`stamp_onnx` (``onnx-parity stamp FILE --model SPEC``) writes the model's own
(from timm's pretrained config, see :func:`~pytest_onnx_parity.dataconfig.resolve_data_config`)
and a provenance record into its ``metadata_props``; :func:`check_file` runs every check of a
gate item on it (``onnx-parity check FILE --model SPEC``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import OnnxFileError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .options import ParityOptions
    from .parity import ParityRun
    from .results import ParityResult
    from .specs import ModelSpec


def onnx_file_path(onnx_file: "str | os.PathLike[str]") -> Path:
    """``onnx_file`` as a path to an existing file ending in ``.onnx``; else :class:`OnnxFileError` naming the fix."""
    path = Path(onnx_file).expanduser()
    if path.suffix.lower() != ".onnx":
        raise OnnxFileError(f"{path} is not an ONNX file (the name does not end in .onnx). Pass the path of the "
                            ".onnx file your export step wrote.")
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}. Pass the path of the .onnx file your export step wrote.")
    return path


def check_onnx_file(onnx_file: str | os.PathLike[str]) -> Path:
    """:func:`onnx_file_path`, then parse the file with onnx (no torch; external data is not loaded, only looked for).

    A file that does not parse, is empty or was cut off (no graph, no opset) raises
    :class:`OnnxFileError` naming the fix. Its metadata is remembered, so the run reads it without
    parsing the file again.
    """
    from .cache import repair_hint
    from .dataconfig import load_onnx_proto, remember_metadata
    from .files import external_files

    path = onnx_file_path(onnx_file)
    proto = load_onnx_proto(path)
    problem = None
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        problem = "holds no ONNX model (it is empty, or not an ONNX file)"
    elif not proto.opset_import or not proto.graph.output:
        problem = "is truncated or incomplete (it has no opset or no graph output)"
    else:
        missing = [p.name for p in external_files(path) if not p.is_file()]
        if missing:
            problem = f"refers to external data that is not beside it: {', '.join(missing)}"
    if problem:
        raise OnnxFileError(f"{path} {problem}. {repair_hint(path)}")
    remember_metadata(path, {p.key: p.value for p in proto.metadata_props})
    return path


def preflight(spec: ModelSpec) -> None:
    """What the gate and ``onnx-parity check`` refuse before torch is imported: a missing or unreadable
    checkpoint, and a missing, unreadable or incomplete ``@FILE`` (made absolute already).
    Raises :class:`~pytest_onnx_parity.errors.OnnxParityError` (a usage error in both)."""
    from .specs import check_checkpoint

    check_checkpoint(spec)
    if spec.onnx_file is not None:
        check_onnx_file(spec.onnx_file)


def stamp_onnx(onnx_file: "str | os.PathLike[str]", model: "str | ModelSpec | torch.nn.Module", *,
               output: "str | os.PathLike[str] | None" = None) -> Path:
    """Write ``model``'s data config and provenance into an ONNX file made elsewhere; return the stamped file.

    ``model`` is a spec string (``NAME`` or ``NAME=WEIGHTS``; nothing is downloaded: the data
    config comes from timm's pretrained config of NAME) or a timm module. The file is stamped in
    place, or copied to ``output`` (with its external data) and the copy stamped; the graph and
    the weights are not touched. Metadata the file already has under other keys is kept.
    """
    from .dataconfig import read_provenance, resolve_data_config
    from .export import library_versions, write_metadata
    from .files import copy_onnx

    path = check_onnx_file(onnx_file)  # a clear error for a file that is not ONNX, before timm is imported
    cfg = resolve_data_config(model)  # type: ignore[arg-type]  # a spec: timm's pretrained config, no model built
    provenance = {**read_provenance(path), **_provenance(model), "versions": library_versions()}
    provenance.setdefault("exporter", None)  # made elsewhere: the exporter is not known
    target = path
    if output is not None:
        target = Path(output).expanduser()
        if target.suffix.lower() != ".onnx":
            raise OnnxFileError(f"output {target} does not end in .onnx; name the stamped copy FILE.onnx")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.resolve() != path.resolve():
            copy_onnx(path, target)
    write_metadata(target, cfg, provenance=provenance)
    return target


def _provenance(model: Any) -> dict[str, Any]:
    from .specs import parse_spec

    if isinstance(model, str) or type(model).__name__ == "ModelSpec":
        spec = parse_spec(model) if isinstance(model, str) else model
        if spec.onnx_file is not None:
            raise SpecError(f"model spec {spec.text!r}: give the file to stamp as the file argument, not as @FILE")
        weights = spec.weights
        if spec.weights_kind == "file":
            ckpt = Path(spec.weights).expanduser()
            weights = f"{ckpt.name} sha256:{_file_sha256(ckpt)}" if ckpt.is_file() else str(ckpt)
        return {"model": spec.name, "weights": weights, "stamped": True}
    from .models import model_name, weights_identity

    return {"model": model_name(model), "weights": weights_identity(model), "stamped": True}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def file_spec(model: str, onnx_file: "str | os.PathLike[str]", default_weights: str = "random") -> "ModelSpec":
    """The spec ``NAME[=WEIGHTS]@FILE`` of a file given apart from its model (as ``onnx-parity check`` takes them).

    Raises :class:`SpecError`, :class:`WeightsError` or :class:`OnnxFileError` (usage errors: known before
    running): the file and the checkpoint are checked first (:func:`preflight`, no torch), then the name
    (timm's registry, which imports torch).
    """
    from dataclasses import replace

    from .specs import check_model_name, parse_spec

    spec = parse_spec(model, default_weights=default_weights)
    if spec.onnx_file is not None:
        raise SpecError(f"--model {model!r}: give the ONNX file as the FILE argument, not as @FILE in the spec")
    path = onnx_file_path(onnx_file)
    spec = replace(spec, text=f"{spec.text}@{onnx_file}", onnx_file=str(path.resolve()))
    preflight(spec)
    check_model_name(spec.name)
    return spec


def check_file(spec: "ModelSpec", options: "ParityOptions",
               after: "Callable[[ParityRun], None] | None" = None) -> "ParityResult":
    """Every check of a gate item on ``spec``'s ``@FILE``; a file or model that cannot be checked gives status error.

    ``after(run)`` is called once the checks ran, before the run is closed (plots, bundles).
    """
    import time

    from .errors import OnnxParityError
    from .parity import ParityRun

    run = ParityRun(spec, None, options)
    try:
        try:
            run.prepare()
        except OnnxParityError as exc:
            run.result.status, run.result.error = "error", str(exc)
            run.result.timings["total_s"] = time.perf_counter() - run._t0
            return run.result
        result = run.run_checks()
        if after is not None:
            after(run)
        return result
    finally:
        run.close()

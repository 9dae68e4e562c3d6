"""Files made elsewhere: stamp the model's data config into them, check them from a shell.

A team's pipeline makes the ONNX file it ships (``timm.utils.onnx.onnx_export``, a plain
``torch.onnx.export``, its own script, a simplifier after it). That file carries no data
config: :func:`stamp_onnx` (``onnx-parity stamp FILE --model SPEC``) writes the model's own
(from the first source that has it: overrides, a train.py checkpoint's args, a config.json, timm's pretrained config; see :func:`~pytest_onnx_parity.preprocessing.dataconfig.resolve_data_config`)
and a provenance record into its ``metadata_props``; :func:`check_file` runs every check of a
gate item on it (``onnx-parity check FILE --model SPEC``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OnnxFileError, SpecError
from ..specs import ModelSpec
from .io import check_onnx_file

if TYPE_CHECKING:  # pragma: no cover
    import torch



def stamp_onnx(onnx_file: "str | os.PathLike[str]", model: "str | ModelSpec | torch.nn.Module", *,
               output: "str | os.PathLike[str] | None" = None, model_args: dict[str, Any] | None = None,
               data_config: dict[str, Any] | None = None, use_ema: bool = True, force: bool = False) -> Path:
    """Write ``model``'s data config and provenance into an ONNX file made elsewhere; return the stamped file.

    ``model`` is a spec string (``NAME[(ARGS)][=WEIGHTS]``; nothing is downloaded and no model is
    built: the data config comes from the first source that has it, see
    :func:`~pytest_onnx_parity.preprocessing.dataconfig.resolve_data_config`: ``data_config``
    overrides, a train.py checkpoint's args, a config.json, the name's pretrained config) or a
    timm module. The file is stamped in place, or copied to ``output`` (with its external data)
    and the copy stamped; the graph and the weights are not touched. Metadata the file already
    has under other keys is kept. The provenance says where the config came from
    (``data_config_source``). A config whose input size contradicts the file's fixed input size is
    refused (:class:`OnnxFileError`, naming both sizes and the fix) unless ``force``.
    """
    from ..preprocessing.dataconfig import data_config_source, resolve_data_config, spec_data_config
    from ..runtime.environment import library_versions
    from .io import copy_onnx
    from .metadata import read_provenance, write_metadata

    path = check_onnx_file(onnx_file)  # a clear error for a file that is not ONNX, before timm is imported
    if isinstance(model, (str, ModelSpec)):
        cfg, source = spec_data_config(model, model_args=model_args, overrides=data_config, use_ema=use_ema)
    else:
        cfg = resolve_data_config(model, data_config=data_config)  # type: ignore[arg-type]
        source = "override" if data_config else data_config_source(model)
    if not force:
        check_fixed_size(path, cfg, source)
    provenance = {**read_provenance(path), **_provenance(model, model_args), "versions": library_versions(),
                  "data_config_source": source}
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


def fixed_size(path: Path) -> tuple[int, int] | None:
    """The (height, width) a file fixes for its image input (its first float input of rank 4, NCHW, or NHWC
    told by 1, 3 or 4 channels last), or None when either is dynamic or there is no such input."""
    from onnx import TensorProto

    from .io import load_onnx_proto

    graph = load_onnx_proto(path).graph
    inits = {i.name for i in graph.initializer}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    for inp in graph.input:
        t = inp.type.tensor_type
        if inp.name in inits or t.elem_type not in floats or len(t.shape.dim) != 4:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]
        h, w = (dims[2], dims[3]) if dims[1] in (1, 3, 4) or dims[3] not in (1, 3, 4) else (dims[1], dims[2])
        return (h, w) if h is not None and w is not None else None
    return None


def check_fixed_size(path: Path, cfg: dict[str, Any], source: str) -> None:
    """Refuse a data config whose input size a file with a fixed input size could never take."""
    from ..preprocessing.dataconfig import source_words

    fixed = fixed_size(path)
    c, h, w = (int(v) for v in cfg["input_size"])
    if fixed is None or fixed == (h, w):
        return
    fh, fw = fixed
    raise OnnxFileError(
        f"{path}: its input is fixed at {fh}x{fw}, but the data config to stamp says {h}x{w} (from "
        f"{source_words(source)}): a deployment that reads it would resize images to {h}x{w} and the file would "
        f"refuse them. Stamp the config the file was exported for: name the checkpoint it came from (NAME=CHECKPOINT, "
        f"whose training args hold its size), or give the size: --data-config input_size=({c},{fh},{fw}) "
        f"(stamp_onnx(..., data_config={{'input_size': ({c}, {fh}, {fw})}})). To stamp it as asked all the same: "
        "--force (stamp_onnx(..., force=True)).")


def _provenance(model: Any, model_args: dict[str, Any] | None = None) -> dict[str, Any]:
    from ..specs import parse_spec, with_model_args

    if isinstance(model, (str, ModelSpec)):
        spec = with_model_args(parse_spec(model) if isinstance(model, str) else model, model_args)
        if spec.onnx_file is not None:
            raise SpecError(f"model spec {spec.text!r}: give the file to stamp as the file argument, not as @FILE")
        weights = spec.weights
        if spec.weights_kind == "file":
            ckpt = Path(spec.weights).expanduser()
            weights = f"{ckpt.name} sha256:{_file_sha256(ckpt)}" if ckpt.is_file() else str(ckpt)
        return {"model": spec.label, "weights": weights, "stamped": True}
    from ..model.build import model_name, weights_identity

    return {"model": model_name(model), "weights": weights_identity(model), "stamped": True}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]




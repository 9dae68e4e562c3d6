"""What an ONNX file says about itself: the metadata keys, reading and writing them.

ONNX files carry no preprocessing. The plugin writes the model's own data config and a
provenance record into ``metadata_props``; a deployment reads them back with
:func:`read_data_config`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingMetadataError
from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, SOURCES_IN_ORDER, apply_test_time, normalize_data_config
from .io import load_onnx_proto, read_metadata, save_onnx

if TYPE_CHECKING:  # pragma: no cover
    import onnx


DATA_CONFIG_KEY = "onnx_parity.data_config"


PROVENANCE_KEY = "onnx_parity.provenance"


def read_provenance(onnx_file: "str | os.PathLike[str] | onnx.ModelProto") -> dict[str, Any]:
    """The provenance JSON the plugin wrote, or an empty dict for a file made elsewhere."""
    raw = read_metadata(onnx_file).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def read_data_config(onnx_file: "str | os.PathLike[str] | onnx.ModelProto", *, test_time: bool = False) -> dict[str, Any]:
    """The data config an ONNX file carries in its metadata.

    Returns a dict with ``input_size``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct`` and ``crop_mode``. With ``test_time=True`` the model's test-time
    input size and crop (when it has them) replace the eval ones.
    Raises :class:`MissingMetadataError` for a file without that metadata.
    """
    meta = read_metadata(onnx_file)
    raw = meta.get(DATA_CONFIG_KEY)
    if raw is None:
        where = onnx_file if not hasattr(onnx_file, "graph") else "this ONNX model"
        raise MissingMetadataError(
            f"{where} carries no data config (metadata key {DATA_CONFIG_KEY!r}). A model's data config comes from "
            f"{SOURCES_IN_ORDER} (pytest_onnx_parity.resolve_data_config(SPEC)); write it "
            f"into the file with: onnx-parity stamp {where if not hasattr(onnx_file, 'graph') else 'FILE.onnx'} "
            "--model NAME (or pytest_onnx_parity.stamp_onnx(path, 'NAME')), or export with "
            "pytest_onnx_parity.export_onnx."
        )
    try:
        config = normalize_data_config(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise MissingMetadataError(f"metadata {DATA_CONFIG_KEY!r} is not a valid data config: {exc}") from exc
    return apply_test_time(config) if test_time else {k: config[k] for k in DATA_CONFIG_FIELDS}


def metadata_props(data_config: dict[str, Any], provenance: dict[str, Any] | None, opset: int) -> dict[str, str]:
    """The plugin's metadata entries: the data config and, when given, the provenance (with the opset)."""
    props = {DATA_CONFIG_KEY: json.dumps(normalize_data_config(data_config), sort_keys=True)}
    if provenance is not None:
        props[PROVENANCE_KEY] = json.dumps({**provenance, "opset": opset}, sort_keys=True, default=str)
    return props


def write_metadata(path: "str | os.PathLike[str]", data_config: dict[str, Any], provenance: dict[str, Any] | None = None) -> int:
    """Write the data config (and provenance) into an ONNX file's metadata, in place.

    The graph is rewritten without loading external data, so this is cheap for
    large models. Returns the file's ai.onnx opset.
    """
    path = Path(path)
    proto = load_onnx_proto(path)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(metadata_props(data_config, provenance, opset))
    del proto.metadata_props[:]
    for k, v in sorted(props.items()):
        proto.metadata_props.add(key=k, value=v)
    save_onnx(proto, path)  # weights in external data stay where they are
    return opset


def file_exporter(path: "str | os.PathLike[str] | onnx.ModelProto", provenance: dict[str, Any] | None = None) -> str | None:
    """The exporter that made a file: its provenance metadata (the plugin's exports, stamped files), else what
    its graph shows (dynamo's scope metadata, TorchScript's ``/module/path`` node names), else None (unknown)."""
    from ..axes import EXPORTERS
    from ..layers.scopes import detect_exporter

    said = (read_provenance(path) if provenance is None else provenance).get("exporter")
    if said in EXPORTERS:
        return str(said)
    seen = detect_exporter(list(load_onnx_proto(path).graph.node))
    return None if seen == "unknown" else seen


def file_opset(path: "str | os.PathLike[str] | onnx.ModelProto") -> int | None:
    """The file's ai.onnx opset (``path``: a file, or its graph already loaded)."""
    proto = load_onnx_proto(path)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)

"""ONNX file I/O, the one home: load with or without external data, save, copy and move a file
with its external data.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OnnxFileError

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def load_onnx_proto(onnx_file: "str | os.PathLike[str] | onnx.ModelProto", *, weights: bool = False) -> "onnx.ModelProto":
    """Load an ONNX file (graph and metadata; initializers only when ``weights``)."""
    import onnx

    if isinstance(onnx_file, onnx.ModelProto):
        return onnx_file
    path = Path(onnx_file)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}. Pass the path of an existing .onnx file.")
    try:
        return onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # protobuf raises DecodeError and friends
        from .cache import repair_hint

        raise OnnxFileError(f"{path} is not a readable ONNX file ({type(exc).__name__}: {exc}). {repair_hint(path)}") from exc


def load_onnx_bytes(data: bytes, *, what: str = "the model") -> "onnx.ModelProto":
    """A serialised ONNX model parsed (the file's bytes, or a graph the package rewrote)."""
    import onnx

    try:
        return onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise OnnxFileError(f"{what} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc


def extract_part(path: "str | os.PathLike[str]", dst: "str | os.PathLike[str]", inputs: list[str],
                 outputs: list[str]) -> Path:
    """The part of the file at ``path`` between ``inputs`` and ``outputs``, written to ``dst``
    (``onnx.utils.extract_model``: it reads the file itself)."""
    import onnx.utils

    try:
        onnx.utils.extract_model(str(path), str(dst), inputs, outputs)
    except Exception as exc:
        raise OnnxFileError(f"cannot cut {inputs} -> {outputs} out of {path}: {type(exc).__name__}: {exc}") from exc
    return Path(dst)


#: Bytes of weights above which an ONNX file keeps them in an external-data file (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def external_files(path: "str | os.PathLike[str]") -> list[Path]:
    """The external-data files an ONNX file refers to (beside it), sorted by name."""
    import onnx

    path = Path(path)
    proto = load_onnx_proto(path)
    names: set[str] = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(kv.value for kv in t.external_data if kv.key == "location")
    return [path.parent / n for n in sorted(names)]


def move_onnx(src: Path, target: Path) -> None:
    """Move an ONNX file and its external data into ``target``'s folder (same file system)."""
    for data in external_files(src):
        os.replace(data, target.parent / data.name)
    os.replace(src, target)


def copy_onnx(src: Path, target: Path) -> None:
    """Copy an ONNX file (and its external data) atomically to ``target``."""
    for data in external_files(src):
        tmp = target.parent / f".{data.name}.tmp"
        shutil.copyfile(data, tmp)
        os.replace(tmp, target.parent / data.name)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)


def save_onnx(proto: "onnx.ModelProto", dst: "str | os.PathLike[str]", *, external: bool = False) -> Path:
    """Write ``proto`` to ``dst`` through a temporary file and ``os.replace``.

    ``external=True`` puts the weights into ``<dst name>.data`` beside it (for models near
    protobuf's 2 GiB limit, see :data:`EXTERNAL_DATA_THRESHOLD`); otherwise the proto is written
    as it is, so references to external data already beside ``dst`` stay valid.
    """
    import onnx

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        if external:
            onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{dst.name}.data", size_threshold=1024)
        else:
            onnx.save_model(proto, str(tmp))
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def onnx_file_path(onnx_file: "str | os.PathLike[str]") -> Path:
    """``onnx_file`` as a path to an existing file ending in ``.onnx``; else :class:`OnnxFileError` naming the fix."""
    path = Path(onnx_file).expanduser()
    if path.suffix.lower() != ".onnx":
        raise OnnxFileError(f"{path} is not an ONNX file (the name does not end in .onnx). Pass the path of the "
                            ".onnx file your export step wrote.")
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}. Pass the path of the .onnx file your export step wrote.")
    return path


_METADATA_CACHE: dict[tuple[str, int, int], dict[str, str]] = {}


def read_metadata(onnx_file: "str | os.PathLike[str] | onnx.ModelProto") -> dict[str, str]:
    """All ``metadata_props`` of an ONNX file as a plain dict.

    Parsing a file means parsing its weights too (they are inside it), so results are
    remembered per (path, modification time, size): a rewritten file is read again.
    """
    if hasattr(onnx_file, "metadata_props"):
        return {p.key: p.value for p in onnx_file.metadata_props}  # type: ignore[union-attr]
    path = Path(onnx_file)  # type: ignore[arg-type]
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _METADATA_CACHE:
        return dict(_METADATA_CACHE[key])
    proto = load_onnx_proto(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    if key is not None:
        if len(_METADATA_CACHE) > 256:
            _METADATA_CACHE.clear()
        _METADATA_CACHE[key] = meta
    return dict(meta)


def remember_metadata(onnx_file: "str | os.PathLike[str]", meta: dict[str, str]) -> None:
    """Record the metadata of a file just written, so reading it back needs no parse."""
    path = Path(onnx_file)
    st = path.stat()
    _METADATA_CACHE[(str(path.resolve()), st.st_mtime_ns, st.st_size)] = dict(meta)


def check_onnx_file(onnx_file: str | os.PathLike[str]) -> Path:
    """:func:`~.io.onnx_file_path`, then parse the file with onnx (no torch; external data is not loaded, only looked for).

    A file that does not parse, is empty or was cut off (no graph, no opset) raises
    :class:`OnnxFileError` naming the fix. Its metadata is remembered, so the run reads it without
    parsing the file again.
    """
    from .cache import repair_hint

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

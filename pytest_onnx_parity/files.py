"""Files: safe names, atomic writes and ONNX files with their external data.

One implementation of each, shared by the cache, the exporter, the report
writer and the reproducer bundles.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

#: Bytes of weights above which an ONNX file keeps them in an external-data file (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def safe_name(text: str, limit: int = 120) -> str:
    """A file or folder name for a model spec: letters, digits, ``_.-``; never ``.``/``..`` or empty."""
    s = _UNSAFE.sub("_", str(text)).strip("._")
    return s[:limit] or "model"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: "str | os.PathLike[str]", text: str | bytes) -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see the old file or the new one, never half of one. The file gets the
    mode any newly created file gets (0666 less the umask), not the private mode
    of the temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode() if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def external_files(path: "str | os.PathLike[str]") -> list[Path]:
    """The external-data files an ONNX file refers to (beside it), sorted by name."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
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

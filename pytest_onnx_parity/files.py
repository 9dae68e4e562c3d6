"""Files: safe names, atomic writes and ONNX files with their external data.

One implementation of each, shared by the cache, the exporter, the report
writer and the reproducer bundles.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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




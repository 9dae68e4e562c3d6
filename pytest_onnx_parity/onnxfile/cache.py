"""The export cache: keyed, verified, atomic and safe across processes.

Layout: ``<cache_dir>/<slug>-<key16>/`` holds ``model.onnx`` (plus
``model.onnx.data`` for files over 2 GB) and ``manifest.json`` with the sha256 of
every file. An entry is created in a temporary folder beside it and renamed into
place, so a reader never sees half a file; a file lock serialises processes that
build the same entry; a hit is trusted only when every hash matches, otherwise the
entry is deleted and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..files import safe_name, write_atomic

__all__ = ["ExportCache", "cache_key", "default_cache_dir", "file_sha256", "repair_hint", "write_atomic"]

MANIFEST = "manifest.json"
ONNX_NAME = "model.onnx"
LOCK_TIMEOUT_S = 3600.0


def default_cache_dir() -> Path:
    """Outside pytest: ``$XDG_CACHE_HOME/pytest-onnx-parity`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-onnx-parity"


def repair_hint(onnx_file: str | os.PathLike[str]) -> str:
    """What to do about an ONNX file that cannot be read: a cache entry (a manifest beside it) is rebuilt
    once deleted; any other file (one given to check, ``@FILE`` or ``onnx=``) only its maker can rebuild."""
    path = Path(onnx_file)
    if (path.parent / MANIFEST).is_file():
        return f"Delete the cache entry {path.parent} so that the cache rebuilds it."
    return "Re-export it: this file is only read here, nothing rebuilds it."


def cache_key(fields: Mapping[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


class ExportCache:
    def __init__(self, root: "str | os.PathLike[str]") -> None:
        self.root = Path(root)

    def entry_dir(self, key: str, label: str) -> Path:
        return self.root / f"{safe_name(label, 80)}-{key[:16]}"

    @contextmanager
    def locked(self, key: str, label: str) -> Iterator[Path]:
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.entry_dir(key, label)
        with FileLock(str(entry) + ".lock", timeout=LOCK_TIMEOUT_S):
            yield entry

    @staticmethod
    def verify(entry: Path) -> dict[str, Any] | None:
        """The manifest of a complete, undamaged entry, else ``None``."""
        manifest_path = entry / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
            files = manifest["files"]
            for name, meta in files.items():
                p = entry / name
                if p.stat().st_size != meta["size"] or file_sha256(p) != meta["sha256"]:
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return manifest

    def get_or_build(
        self, key: str, label: str, build: Callable[[Path], dict[str, Any]]
    ) -> tuple[Path, dict[str, Any], bool]:
        """Return ``(entry_dir, manifest, hit)``; ``build(tmp_dir)`` writes ``model.onnx`` there.

        ``build`` returns extra manifest fields. A damaged entry is removed and rebuilt.
        """
        with self.locked(key, label) as entry:
            manifest = self.verify(entry) if entry.exists() else None
            if manifest is not None:
                return entry, manifest, True
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=self.root))
            try:
                extra = build(tmp)
                files = {
                    p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
                    for p in sorted(tmp.iterdir())
                    if p.is_file()
                }
                manifest = {"key": key, "label": label, "files": files, **extra}
                write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=str))
                if entry.exists():
                    shutil.rmtree(entry)
                os.replace(tmp, entry)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return entry, manifest, False

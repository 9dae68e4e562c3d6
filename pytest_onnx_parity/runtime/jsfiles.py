"""What the JavaScript runtimes (onnxruntime-node, onnxruntime-web in Node.js or Chromium) are handed beside a
file: ONNX Runtime's session config entries in onnxruntime-js's nested ``extra`` form, and the external-data
files the model names (onnxruntime-web reads no file itself)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def nested_config(config: Mapping[str, str]) -> dict[str, Any]:
    """``{"session.a.b": "1"}`` -> ``{"session": {"a": {"b": "1"}}}``: onnxruntime-js's ``extra`` form of config entries."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = str(value)
    return out


def external_data(path: Path) -> list[dict[str, str]]:
    """The external-data files of ``path``, each under the location the file names (``weights/x.bin``, not ``x.bin``)
    and its path on disk."""
    from ..onnxfile.io import external_files

    return [{"path": f.relative_to(path.parent).as_posix(), "file": str(f)} for f in external_files(path) if f.is_file()]

"""What a folder holds when a checkpoint path is a folder or is not there: its checkpoints, the closest name.

timm's ``train.py`` writes its run into a folder (``model_best.pth.tar``, ``last.pth.tar``,
``checkpoint-N.pth.tar`` beside ``args.yaml`` and ``summary.csv``); a spec that names the folder, or
misspells a file in it, is told which checkpoints are there. Needs no torch.
"""
from __future__ import annotations

import difflib
from pathlib import Path

#: the file timm's train.py keeps its best epoch in: named first when a folder holds it
BEST = "model_best.pth.tar"


def checkpoints_in(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """The names of the checkpoint files in ``folder`` (not searched below it), sorted; none when unreadable."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    except OSError:
        return []


def folder_hint(folder: Path, spec_name: str, suffixes: tuple[str, ...]) -> str:
    """For a checkpoint path that is a folder: the checkpoints it holds and the spec to write."""
    found = checkpoints_in(folder, suffixes)
    if not found:
        return f"It holds no checkpoint (no file ending in {', '.join(suffixes)})."
    pick = BEST if BEST in found else found[-1]
    return (f"It holds {len(found)} checkpoint{'s' if len(found) > 1 else ''}: {_listed(found)}; write "
            f"{spec_name}={folder / pick} (the file the ONNX file was exported from).")


def missing_hint(path: Path, suffixes: tuple[str, ...]) -> str:
    """For a checkpoint path that does not exist: the closest checkpoint beside it, and what its folder holds."""
    folder = path.parent
    if not folder.is_dir():
        return f"Its folder {folder} does not exist either."
    found = checkpoints_in(folder, suffixes)
    if not found:
        return f"Its folder {folder} holds no checkpoint (no file ending in {', '.join(suffixes)})."
    close = difflib.get_close_matches(path.name, found, n=1, cutoff=0.6)
    mean = f"Did you mean {folder / close[0]}? " if close else ""
    return f"{mean}Its folder holds: {_listed(found)}."


def _listed(names: list[str], most: int = 8) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more

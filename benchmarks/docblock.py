"""Write generated text into a marked block of a Markdown document.

Every figure a benchmark measures goes into the document through this module, between
two HTML comments that Markdown does not render::

    <!-- NAME -->
    ...written by the script...
    <!-- /NAME -->

The legacy form ``<!-- begin: NAME -->`` ... ``<!-- end: NAME -->`` is recognised too:
a block found in that form is replaced in place and keeps its form. Everything outside
the block (prose, other blocks) is left byte for byte as it was. A block that is not in
the document yet is appended at its end, after ``heading`` when one is given.

The scripts in benchmarks/ run as scripts (``python benchmarks/NAME.py``), so their own
folder is on ``sys.path`` and they import this module as ``from docblock import write_block``.
No third-party imports.
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = ["DocBlockError", "block_markers", "find_block", "read_block", "write_block"]


class DocBlockError(ValueError):
    """A document's markers are unbalanced, so the block cannot be replaced safely."""


def block_markers(marker: str) -> list[tuple[str, str]]:
    """The (opening, closing) comment pairs that delimit block ``marker``, preferred form first."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", marker):
        raise DocBlockError(f"block name {marker!r}: use letters, digits, '-', '_' or '.' only")
    return [(f"<!-- {marker} -->", f"<!-- /{marker} -->"), (f"<!-- begin: {marker} -->", f"<!-- end: {marker} -->")]


def find_block(text: str, marker: str) -> tuple[int, int, str, str] | None:
    """``(start, end, opening, closing)`` of block ``marker`` in ``text`` (markers included), or None.

    Raises DocBlockError when an opening marker has no closing one after it, or a marker
    appears more than once: replacing would then eat or duplicate text.
    """
    for begin, end in block_markers(marker):
        n_begin, n_end = text.count(begin), text.count(end)
        if not n_begin and not n_end:
            continue
        if n_begin != 1 or n_end != 1:
            raise DocBlockError(
                f"block {marker!r}: found {begin!r} {n_begin} time(s) and {end!r} {n_end} time(s); "
                "fix the document so each appears exactly once, then rerun")
        start, stop = text.index(begin), text.index(end)
        if stop < start:
            raise DocBlockError(f"block {marker!r}: {end!r} comes before {begin!r}; fix the document, then rerun")
        return start, stop + len(end), begin, end
    return None


def read_block(doc_path: str | Path, marker: str) -> str | None:
    """The text inside block ``marker`` of ``doc_path`` (markers and surrounding newlines stripped), or None."""
    path = Path(doc_path)
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    found = find_block(text, marker)
    if found is None:
        return None
    start, stop, begin, end = found
    return text[start + len(begin): stop - len(end)].strip("\n")


def write_block(doc_path: str | Path, marker: str, text: str, *, heading: str | None = None,
                title: str | None = None) -> Path:
    """Put ``text`` into block ``marker`` of ``doc_path``: replace the block in place, or append it.

    heading: a Markdown line (e.g. ``"## Gate time"``) written before the block when it is appended;
    ignored when the block exists already (the heading is then outside it, in the prose).
    title: the first line of the document when the file does not exist yet.
    Returns the path written.
    """
    path = Path(doc_path)
    current = path.read_text(encoding="utf-8") if path.exists() else (f"{title.rstrip()}\n" if title else "")
    found = find_block(current, marker)
    body = text.strip("\n")
    if found is not None:
        start, stop, begin, end = found
        new = current[:start] + f"{begin}\n{body}\n{end}" + current[stop:]
    else:
        begin, end = block_markers(marker)[0]
        lead = current.rstrip("\n")
        parts = [lead] if lead else []
        if heading:
            parts.append(heading.strip())
        parts.append(f"{begin}\n{body}\n{end}")
        new = "\n\n".join(parts) + "\n"
    if new != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new, encoding="utf-8")
    print(f"wrote block {marker!r} of {path}")
    return path

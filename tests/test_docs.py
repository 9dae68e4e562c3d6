"""The docs' generated blocks: balanced markers, each written by a benchmark script, and the writer itself.

Reads files only (no torch, timm or onnx); loads benchmarks/docblock.py by path.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
SCRIPTS = {p: p.read_text(encoding="utf-8") for p in sorted((ROOT / "benchmarks").glob("*.py"))}

# <!-- name -->, <!-- /name -->, <!-- begin: name -->, <!-- end: name -->; prose comments (with spaces) are not markers
MARKER = re.compile(r"<!-- (/|begin: |end: )?([A-Za-z0-9][A-Za-z0-9_.-]*) -->")


def _docblock():
    spec = importlib.util.spec_from_file_location("docblock", ROOT / "benchmarks" / "docblock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def blocks(text: str) -> list[str]:
    """The names of the blocks in ``text``, in order; AssertionError on an unbalanced or nested marker."""
    names, open_name = [], None
    for m in MARKER.finditer(text):
        kind, name = m.group(1) or "", m.group(2)
        closing = kind in ("/", "end: ")
        if not closing:
            assert open_name is None, f"<!-- {kind}{name} --> opens inside block {open_name!r} (missing its close?)"
            open_name = (name, kind)
        else:
            expected = {"/": "", "end: ": "begin: "}[kind]
            assert open_name == (name, expected), f"{m.group(0)} closes {open_name!r}: markers out of order or unmatched"
            names.append(name)
            open_name = None
    assert open_name is None, f"block {open_name[0]!r} is never closed"
    return names


def test_the_docs_have_generated_blocks() -> None:
    assert DOCS and any(blocks(p.read_text(encoding="utf-8")) for p in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_markers_are_balanced(doc: Path) -> None:
    names = blocks(doc.read_text(encoding="utf-8"))
    assert len(names) == len(set(names)), f"{doc.name}: a block appears twice: {names}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_block_is_written_by_a_benchmark_script(doc: Path) -> None:
    for name in blocks(doc.read_text(encoding="utf-8")):
        writers = [p.name for p, src in SCRIPTS.items() if re.search(rf"['\"]{re.escape(name)}['\"]", src)]
        assert writers, f"{doc.name}: block {name!r} is written by no script in benchmarks/ (its name appears in none)"


def test_the_block_checker_catches_broken_markers() -> None:
    assert blocks("a\n<!-- x -->\n1\n<!-- /x -->\n<!-- begin: y -->\n2\n<!-- end: y -->\n") == ["x", "y"]
    for broken in ("<!-- x -->\n1\n<!-- x -->\n", "<!-- x -->\n1\n", "<!-- /x -->\n", "<!-- begin: x -->\n<!-- /x -->",
                   "<!-- x -->\n<!-- y -->\n<!-- /y -->\n<!-- /x -->"):
        with pytest.raises(AssertionError):
            blocks(broken)


def test_write_block_replaces_in_place_and_keeps_the_rest(tmp_path: Path) -> None:
    db = _docblock()
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\nprose 1\n\n<!-- a -->\nold 1.5x\n<!-- /a -->\n\nprose 2\n<!-- b -->\nkeep\n<!-- /b -->\n")
    db.write_block(doc, "a", "new 2.0x\nsecond line\n")
    assert doc.read_text() == ("# T\n\nprose 1\n\n<!-- a -->\nnew 2.0x\nsecond line\n<!-- /a -->\n\nprose 2\n"
                               "<!-- b -->\nkeep\n<!-- /b -->\n")
    assert db.read_block(doc, "a") == "new 2.0x\nsecond line"
    before = doc.read_text()
    db.write_block(doc, "a", "new 2.0x\nsecond line")  # same text: same file
    assert doc.read_text() == before


def test_write_block_appends_a_missing_block(tmp_path: Path) -> None:
    db = _docblock()
    doc = tmp_path / "d.md"
    doc.write_text("# T\n\nprose\n")
    db.write_block(doc, "c", "figures", heading="## Measured")
    assert doc.read_text() == "# T\n\nprose\n\n## Measured\n\n<!-- c -->\nfigures\n<!-- /c -->\n"
    db.write_block(doc, "c", "other", heading="## Measured")  # now replaced, heading not repeated
    assert doc.read_text().count("## Measured") == 1 and db.read_block(doc, "c") == "other"
    new = tmp_path / "sub" / "new.md"
    db.write_block(new, "c", "x", title="# New")
    assert new.read_text() == "# New\n\n<!-- c -->\nx\n<!-- /c -->\n"
    assert blocks(new.read_text()) == ["c"]


def test_write_block_keeps_the_legacy_form(tmp_path: Path) -> None:
    db = _docblock()
    doc = tmp_path / "d.md"
    doc.write_text("p\n<!-- begin: fp16 -->\nold\n<!-- end: fp16 -->\nq\n")
    db.write_block(doc, "fp16", "new")
    assert doc.read_text() == "p\n<!-- begin: fp16 -->\nnew\n<!-- end: fp16 -->\nq\n"


def test_write_block_refuses_unbalanced_markers(tmp_path: Path) -> None:
    db = _docblock()
    doc = tmp_path / "d.md"
    text = "<!-- g -->\nold\n<!-- g -->\ntail\n"  # the closing marker is a second opening one
    doc.write_text(text)
    with pytest.raises(db.DocBlockError, match="exactly once"):
        db.write_block(doc, "g", "new")
    assert doc.read_text() == text
    doc.write_text("<!-- /g -->\n<!-- g -->\n")
    with pytest.raises(db.DocBlockError, match="before"):
        db.write_block(doc, "g", "new")
    with pytest.raises(db.DocBlockError, match="letters"):
        db.write_block(doc, "bad name", "new")


def test_docs_write_every_gate_option_with_its_value_as_one_argument() -> None:
    """``--onnx-parity-images DIR`` lets pytest take DIR for a test path when it picks the rootdir (rootdir.py):
    the docs show ``--onnx-parity-images=DIR`` only, except where they explain that trap (a line saying "test path")."""
    from pytest_onnx_parity.settings import OPTIONS

    nouns = "|".join(re.escape(o.noun) for o in sorted(OPTIONS, key=lambda o: -len(o.noun)) if o.ini_type != "bool")
    space_form = re.compile(rf"--onnx-parity-(?:{nouns}) (?=[^\s`|\-])")
    for doc in [ROOT / "README.md", *DOCS]:
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if "test path" not in line:
                assert not space_form.search(line), f"{doc.name}:{n}: write --option=value: {line.strip()}"


def test_the_readme_examples_use_every_fixture_they_ask_for() -> None:
    import ast

    code = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)
    tests = [f for block in code for f in ast.walk(ast.parse(block)) if isinstance(f, ast.FunctionDef)
             and f.name.startswith("test_")]
    assert tests
    for f in tests:
        used = {n.id for n in ast.walk(f) if isinstance(n, ast.Name)}
        unused = [a.arg for a in f.args.args if a.arg not in used]
        assert not unused, f"README: {f.name} asks for {unused} and never uses them"

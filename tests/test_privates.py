"""Other packages' private names are taken in one module (model/privates.py), each with a fallback that works
when the private name is gone: each test removes the private module and sees the fallback do the same job."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_onnx_parity.model import privates


def _gone(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # an import of it now raises ImportError
    assert privates.private(module, "anything") is None


def test_pytree_fallback_gives_the_same_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    tree = ((a, [b, 3]), {"k": c, "n": None})
    want = privates.leaves_function()(tree)
    _gone(monkeypatch, "torch.utils._pytree")
    fallback = privates.leaves_function()
    assert fallback is privates.walk_leaves
    got = fallback(tree)
    assert [id(x) for x in got] == [id(x) for x in want] == [id(a), id(b), id(3), id(c), id(None)]


def test_local_dir_config_fallback_parses_as_timm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = {"architecture": "resnet18", "num_classes": 7, "num_features": 512, "label_names": ["a"] * 7,
           "model_args": {"in_chans": 1},
           "pretrained_cfg": {"input_size": [3, 96, 96], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 0.95,
                              "interpolation": "bilinear", "classifier": "fc"}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from timm.models._hub import load_model_config_from_path

    want = dict(load_model_config_from_path(tmp_path)[0])
    _gone(monkeypatch, "timm.models._hub")
    got = privates.config_from_folder(tmp_path)
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "label_names", "classifier",
                "source"):
        assert tuple(got[key]) == tuple(want[key]) if isinstance(want[key], list) else got[key] == want[key], key
    assert got["num_classes"] == 7 and tuple(got["input_size"]) == (1, 96, 96)
    with pytest.raises(FileNotFoundError):
        privates.config_from_folder(tmp_path / "none")


def test_the_hub_probe_falls_back_to_the_public_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    sentinel = object()
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: sentinel)
    _gone(monkeypatch, "huggingface_hub.utils._http")
    assert privates.hub_session() is sentinel
    monkeypatch.delattr(huggingface_hub, "get_session")
    assert privates.hub_session() is None  # nothing to probe with: the probe is skipped, not an error


def test_hf_hub_config_fallback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models

    seen: list[str] = []
    monkeypatch.setattr(timm.models, "load_model_config_from_hf", lambda repo: (seen.append(repo) or {"x": 1}, "", {}))
    _gone(monkeypatch, "timm.models._hub")
    assert privates.config_from_hub("org/repo") == {"x": 1} and seen == ["org/repo"]


def _private_imports(text: str) -> list[str]:
    """The lines of ``text`` that import a private module or name of another package (not relative imports)."""
    import re

    out = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:from\s+([\w.]+)\s+import\s+(.+)|import\s+([\w.]+))", line)
        if not m or (m.group(1) or "").startswith(".") or m.group(1) == "__future__":
            continue
        module = m.group(1) or m.group(3)
        names = [n.strip().split(" as ")[0] for n in (m.group(2) or "").strip("() ").split(",")]
        if any(part.startswith("_") for part in module.split(".")) or any(n.startswith("_") for n in names if n):
            out.append(line.strip())
    return out


def test_no_other_module_imports_a_private_name_of_another_package() -> None:
    assert _private_imports("from torch.utils._pytree import tree_flatten\nfrom huggingface_hub.utils import _http\n"
                            "import timm.models._hub as h\nfrom .schema import _ANSI\nfrom __future__ import annotations")\
        == ["from torch.utils._pytree import tree_flatten", "from huggingface_hub.utils import _http",
            "import timm.models._hub as h"]
    root = Path(privates.__file__).resolve().parents[1]
    found = {str(p.relative_to(root)): _private_imports(p.read_text(encoding="utf-8"))
             for p in root.rglob("*.py") if p.name != "privates.py"}
    # pytest's own privates stay in the pytest layer, under tests/test_structure.py's allowlist (the core may not
    # import pytest, so model/privates.py cannot hold them); rootdir.py has its fallback (no check) beside it
    assert found.pop("plugin/rootdir.py") == ["from _pytest.config.findpaths import determine_setup"]
    assert {k: v for k, v in found.items() if v} == {}

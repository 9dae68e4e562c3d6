"""Every name this package takes from another package's private modules, each with a fallback.

A private module (a leading underscore) may be renamed or dropped in any release of its package.
The package reaches for one only here, through :func:`private`, and each use has a fallback for
when the name is gone, so such a release degrades one convenience instead of breaking an import:

| private name | used for | when it is gone |
| --- | --- | --- |
| ``huggingface_hub.utils._http.get_session`` | the hub probe, through the hub's own HTTP client (its proxy and certificate settings) | ``huggingface_hub.get_session`` (public), else no probe |
| ``timm.models._hub.load_model_config_from_path`` | a ``local-dir:`` folder's config.json | the file read and parsed here as timm parses it |
| ``timm.models._hub.load_model_config_from_hf`` | an ``hf-hub:`` repo's config.json | ``timm.models.load_model_config_from_hf`` (public), else ``hf_hub_download`` and the same parse |
| ``torch.utils._pytree.tree_flatten`` | the tensors among a call's arguments and outputs | a walk of tuples, lists and dicts |

Nothing heavy is imported at module import.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Callable


def private(module: str, name: str) -> Any | None:
    """``module.name`` (a private module of another package), or None when the module or the name is gone."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def hub_session() -> Any | None:
    """``huggingface_hub``'s own HTTP session (for one probe), or None without huggingface_hub."""
    get = private("huggingface_hub.utils._http", "get_session")
    if get is None:
        get = private("huggingface_hub", "get_session")
    return get() if get is not None else None


def config_from_folder(folder: Path) -> dict[str, Any]:
    """The pretrained config in ``folder/config.json`` (as timm's save_for_hf writes it); FileNotFoundError
    when there is none."""
    load = private("timm.models._hub", "load_model_config_from_path")
    if load is not None:
        return dict(load(folder)[0])
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    return parse_config(json.loads(path.read_text(encoding="utf-8")), {"file": str(folder), "source": "local-dir"})


def config_from_hub(repo: str) -> dict[str, Any]:
    """The pretrained config of an ``hf-hub:`` repo's config.json (downloaded, or from the hub's cache)."""
    load: Callable[[str], Any] | None = private("timm.models._hub", "load_model_config_from_hf")
    if load is None:
        load = private("timm.models", "load_model_config_from_hf")
    if load is not None:
        return dict(load(repo)[0])
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, "config.json")
    return parse_config(json.loads(Path(path).read_text(encoding="utf-8")), {"hf_hub_id": repo, "source": "hf-hub"})


def parse_config(cfg: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The pretrained config of a timm config.json, as timm parses it: a legacy single dict split, the top-level
    ``num_classes``/``label_names`` and the stored ``in_chans`` carried into it."""
    cfg = dict(cfg)
    if "pretrained_cfg" not in cfg:  # the legacy form: one dict
        pretrained = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features")}
        if "labels" in pretrained:
            pretrained["label_names"] = pretrained.pop("labels")
        cfg = {"pretrained_cfg": pretrained}
    out = {**dict(cfg["pretrained_cfg"]), **extra}
    for key in ("num_classes", "label_names", "label_descriptions"):
        if key in cfg:
            out[key] = cfg[key]
    in_chans = (cfg.get("model_args") or {}).get("in_chans")
    if in_chans is not None and out.get("input_size"):
        out["input_size"] = (int(in_chans), *tuple(out["input_size"])[1:])
    return out


def leaves_function() -> Callable[[Any], list[Any]]:
    """A function giving the leaves of nested tuples, lists and dicts: torch's pytree flattening when it is
    there, else :func:`walk_leaves` (resolve it once, outside a loop: a call per torch op must stay cheap)."""
    flatten = private("torch.utils._pytree", "tree_flatten")
    if flatten is None:
        return walk_leaves
    return lambda tree: list(flatten(tree)[0])


def walk_leaves(tree: Any) -> list[Any]:
    """The leaves of nested tuples, lists and dicts, in order."""
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in walk_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in walk_leaves(tree[key])]
    return [tree]

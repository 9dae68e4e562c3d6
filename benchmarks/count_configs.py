"""How many of timm's pretrained models want other preprocessing than the ImageNet defaults?

Usage: ``python benchmarks/count_configs.py [--json] [--no-write]``

Writes its counts into the ``preprocess-configs`` block of docs/preprocessing.md
(benchmarks/docblock.py) unless ``--no-write`` or ``--json`` is given.

For every name of ``timm.list_pretrained()`` it resolves the data config the
way timm's own validation does,
``timm.data.resolve_data_config({}, pretrained_cfg=get_pretrained_cfg(name).to_dict())``,
and compares its six fields (input_size, interpolation, mean, std, crop_pct,
crop_mode) with two sets of defaults a pipeline may fall back to:

* timm's resolve defaults: 224x224, bicubic, ImageNet mean/std, crop_pct 0.875,
  center crop (what ``resolve_data_config`` fills in for a missing field);
* the same with bilinear interpolation (the default argument of
  ``timm.data.create_transform`` and of hand-written torchvision pipelines).

A config counts as different when any field differs (exact comparison). It
also counts the distinct data configs, which ``tests/test_preprocess.py``
checks one by one. Imports timm (and so torch); takes about a second.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from docblock import write_block

DOC = Path(__file__).resolve().parents[1] / "docs" / "preprocessing.md"

FIELDS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _key(cfg: dict[str, Any]) -> tuple:
    return tuple(_norm(cfg[f]) for f in FIELDS)


def count() -> dict[str, Any]:
    import timm
    import timm.data
    from timm.data import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    defaults = {
        "timm resolve defaults (bicubic)": {
            "input_size": (3, 224, 224), "interpolation": "bicubic", "mean": tuple(IMAGENET_DEFAULT_MEAN),
            "std": tuple(IMAGENET_DEFAULT_STD), "crop_pct": DEFAULT_CROP_PCT, "crop_mode": DEFAULT_CROP_MODE,
        },
    }
    defaults["create_transform defaults (bilinear)"] = dict(
        defaults["timm resolve defaults (bicubic)"], interpolation="bilinear"
    )
    names = timm.list_pretrained()
    differing = {label: 0 for label in defaults}
    per_field = {label: Counter() for label in defaults}
    distinct: Counter = Counter()
    crop_modes: Counter = Counter()
    interpolations: Counter = Counter()
    sides: set[int] = set()
    channels: set[int] = set()
    padding = 0
    crop_pcts: set[float] = set()
    not_square: set[tuple] = set()
    for name in names:
        cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
        distinct[_key(cfg)] += 1
        crop_modes[cfg["crop_mode"]] += 1
        interpolations[cfg["interpolation"]] += 1
        sides.update(cfg["input_size"][1:])
        channels.add(cfg["input_size"][0])
        padding += cfg["crop_pct"] > 1
        crop_pcts.add(cfg["crop_pct"])
        if cfg["input_size"][1] != cfg["input_size"][2]:
            not_square.add(tuple(cfg["input_size"]))
        for label, default in defaults.items():
            fields = [f for f in FIELDS if _norm(cfg[f]) != _norm(default[f])]
            if fields:
                differing[label] += 1
            per_field[label].update(fields)
    return {
        "timm": timm.__version__,
        "pretrained_configs": len(names),
        "differing_from_defaults": differing,
        "differing_fields": {label: dict(c.most_common()) for label, c in per_field.items()},
        "distinct_data_configs": len(distinct),
        "crop_modes": dict(crop_modes.most_common()),
        "interpolations": dict(interpolations.most_common()),
        "input_sides": [min(sides), max(sides)],
        "not_square": sorted(list(s) for s in not_square),
        "crop_pcts": sorted(crop_pcts),
        "crop_pct_above_1": padding,
        "channels": sorted(channels),
    }


def _n(value: int) -> str:
    return f"{value:,}"


def markdown(result: dict[str, Any]) -> str:
    """The preprocess-configs block: how many pretrained configs differ from the defaults, and by which field."""
    total = result["pretrained_configs"]
    labels = {"timm resolve defaults (bicubic)":
              "timm's fallbacks: 224x224, **bicubic**, ImageNet mean/std, crop_pct 0.875, center",
              "create_transform defaults (bilinear)":
              "the same with **bilinear** (`create_transform`'s argument default, torchvision recipes)"}
    lines = [f"Counted with timm {result['timm']} by `python benchmarks/count_configs.py`:", "",
             "| compared with | pretrained configs that differ in at least one field |", "| --- | --- |"]
    for label, n in result["differing_from_defaults"].items():
        lines.append(f"| {labels.get(label, label)} | {_n(n)} of {_n(total)} ({100 * n / total:.1f}%) |")
    first = next(iter(result["differing_fields"]))
    fields = ", ".join(f"{f} {_n(c)}" for f, c in result["differing_fields"][first].items())
    modes = ", ".join(f"{_n(c)} `{m}`" for m, c in result["crop_modes"].items())
    lo, hi = result["input_sides"]
    crops = result["crop_pcts"]
    odd = ", ".join(f"`{list(s)}`" for s in result["not_square"]) or "none"
    lines += ["", f"By field, against timm's fallbacks: {fields}. Crop modes: {modes}. "
              f"Channels: {', '.join(map(str, result['channels']))}; input sides from {lo} to {hi} pixels, "
              f"not square: {odd}; crop_pct from {min(crops):g} to {max(crops):g} "
              f"({_n(result['crop_pct_above_1'])} configs above 1, which pads). The {_n(total)} configs hold "
              f"{_n(result['distinct_data_configs'])} distinct data configs."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print the counts as JSON (and write nothing)")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/ alone")
    args = parser.parse_args(argv)
    result = count()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not args.no_write:
        write_block(DOC, "preprocess-configs", markdown(result))
    total = result["pretrained_configs"]
    print(f"timm {result['timm']}: {total} pretrained configs, {result['distinct_data_configs']} distinct data configs")
    for label, n in result["differing_from_defaults"].items():
        fields = ", ".join(f"{f} {c}" for f, c in result["differing_fields"][label].items())
        print(f"  differ from {label}: {n} of {total} ({100 * n / total:.1f}%); by field: {fields}")
    print(f"  crop modes: {result['crop_modes']}; interpolations: {result['interpolations']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The values of the gate's options, parsed and checked without importing torch or timm: each parser takes the
text (or an ini list) and returns the value, or raises ``ValueError`` saying what it expected."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

def choice(*choices: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        v = v.strip()
        if v not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
        return v
    return parse


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(v: str) -> int:
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ValueError(f"expected an integer from {lo} to {hi}") from None
        if not lo <= n <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return n
    return parse


def fraction(v: str) -> float:
    x = nonneg_float(v)
    if x > 1:
        raise ValueError("expected a fraction between 0 and 1, e.g. 0.85")
    return x


def nonneg_float(v: str) -> float:
    try:
        x = float(str(v).strip())
    except ValueError:
        raise ValueError("expected a non-negative number such as 1e-4") from None
    if not (x >= 0 and math.isfinite(x)):
        raise ValueError("expected a non-negative number such as 1e-4")
    return x


def models(v: Any) -> tuple[str, ...]:
    from . import parse_spec, split_specs

    # one spec a line (ini) or a comma list (CLI); commas inside NAME(ARGS) never split
    items = [p for item in v for p in split_specs(str(item))] if isinstance(v, (list, tuple)) else split_specs(str(v))
    out = tuple(s.strip() for s in items if s and s.strip() and not s.strip().startswith("#"))
    if not out:
        raise ValueError("expected model specs such as resnet18,vit_small_patch16_224=random")
    for s in out:
        try:
            parse_spec(s)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    return out


def data_config(v: Any) -> dict[str, Any]:
    from ..errors import OnnxParityError
    from ..preprocessing.dataconfig import check_overrides
    from .grammar import parse_model_args

    try:
        return check_overrides(v if isinstance(v, dict) else parse_model_args(str(v), where="data config"))
    except OnnxParityError as exc:
        raise ValueError(str(exc)) from None


def image_dir(v: str) -> str:
    from ..errors import ImageError
    from ..preprocessing.imagefiles import find_images

    try:
        find_images(Path(v).expanduser())  # the same rule as the run that reads the folder
    except ImageError as exc:
        raise ValueError(str(exc)) from None
    return str(Path(v).expanduser())


def path(v: str) -> str:
    if not str(v).strip():
        raise ValueError("expected a path")
    return str(Path(v).expanduser())


def existing_file(v: str) -> str:
    p = Path(str(v).strip()).expanduser()
    if not str(v).strip():
        raise ValueError("expected a file")
    if not p.is_file():
        raise ValueError(f"no such file: {p}")
    return str(p)


def name(v: str) -> str:
    if not str(v).strip():
        raise ValueError("expected a name")
    return str(v).strip()


def size(v: str) -> int:
    from ..errors import SpecError
    from ..units import parse_size

    try:
        return parse_size(v)
    except SpecError as exc:
        raise ValueError(str(exc)) from None


def shard(v: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(v))
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise ValueError("expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")

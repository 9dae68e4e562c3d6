"""Sizes in bytes, parsed one way for the command line, ini files and the API."""
from __future__ import annotations

import math
import re

from .errors import SpecError

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kb": 10**3, "kib": 1 << 10,
    "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
    "g": 1 << 30, "gb": 10**9, "gib": 1 << 30,
    "t": 1 << 40, "tb": 10**12, "tib": 1 << 40,
}  # fmt: skip
_SIZE = re.compile(r"\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_size(value: "int | float | str", what: str = "size") -> int:
    """Bytes from ``1073741824``, ``"1GiB"``, ``"512MB"``, ``"512M"``, ``"2e9"`` or ``2e9``.

    K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000
    (any case). Raises :class:`SpecError` for anything else, zero or negative.
    """
    bad = f"{what} must be a positive size such as 1GiB, 512MB or 2e9, got {value!r}"
    if isinstance(value, bool):
        raise SpecError(bad)
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.fullmatch(str(value))
        if not match:
            raise SpecError(bad)
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS or not math.isfinite(number) or number <= 0:
        raise SpecError(bad)
    return max(1, int(number * _UNITS[unit]))

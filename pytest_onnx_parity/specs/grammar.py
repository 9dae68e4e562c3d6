"""The model-argument grammar of a spec: ``NAME(ARGS)``, its ``key=value`` literals, and comma lists
that never split inside parentheses. Strings in, plain values out (no torch, no timm).
"""
from __future__ import annotations

from typing import Any

from ..errors import SpecError


def split_args(model_part: str, text: str) -> tuple[str, str | None, str]:
    """``"NAME(ARGS)=W"`` -> ``("NAME", "ARGS", "=W")``; without ``(``: ``(model_part, None, model_part)``.

    The ``(`` must come before any ``=`` (a checkpoint path may hold parentheses); its ``)`` is
    the one that closes it, and only ``=WEIGHTS`` may follow.
    """
    open_at, eq_at = model_part.find("("), model_part.find("=")
    if open_at < 0 or (0 <= eq_at < open_at):
        if ")" in model_part.partition("=")[0]:
            raise SpecError(f"model spec {text!r}: a ')' without its '(': write NAME(key=value,...)")
        return model_part, None, model_part
    depth = 0
    for i in range(open_at, len(model_part)):
        depth += {"(": 1, ")": -1}.get(model_part[i], 0)
        if depth == 0:
            rest = model_part[i + 1:].strip()
            if rest and not rest.startswith("="):
                raise SpecError(f"model spec {text!r}: after NAME(ARGS) only =WEIGHTS may follow, found {rest!r}; "
                                "write e.g. resnet18(num_classes=10)=/path/to/checkpoint.safetensors")
            return model_part[:open_at], model_part[open_at + 1:i], rest
    raise SpecError(f"model spec {text!r}: the '(' of its model arguments is never closed; "
                    "write NAME(key=value,...), e.g. efficientnet_b0(features_only=True,out_indices=(2,3,4))")


def parse_model_args(text: str, *, where: str = "model arguments") -> dict[str, Any]:
    """``"num_classes=10, out_indices=(2,3,4)"`` -> ``{"num_classes": 10, "out_indices": (2, 3, 4)}``.

    Values are Python literals (numbers, strings, booleans, None, tuples and lists that nest);
    lists become tuples. Raises :class:`SpecError` naming the pair that is not ``key=literal``.
    """
    import ast

    example = "e.g. resnet18(num_classes=10) or efficientnet_b0(features_only=True,out_indices=(2,3,4))"
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"_({text})", mode="eval").body
    except SyntaxError:
        raise SpecError(f"{where}: {text!r} is not a list of key=value pairs; {example}") from None
    assert isinstance(call, ast.Call)
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise SpecError(f"{where}: {text!r} has a value without a key; write key=value pairs, {example}")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        try:
            out[str(kw.arg)] = freeze(ast.literal_eval(kw.value))
        except ValueError:
            raise SpecError(f"{where}: the value of {kw.arg!r} ({ast.unparse(kw.value)}) is not a Python literal; "
                            f"quote a string ({kw.arg}='{ast.unparse(kw.value)}'), {example}") from None
    return out


def freeze(value: Any) -> Any:
    """Lists become tuples, recursively (a spec's arguments are hashable; timm takes either)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def format_model_args(args: "dict[str, Any]") -> str:
    """``{"num_classes": 0}`` -> ``"(num_classes=0)"``; no arguments: ``""``."""
    return "(" + ",".join(f"{k}={v!r}" for k, v in args.items()) + ")" if args else ""


def split_specs(text: str) -> list[str]:
    """A comma or newline separated list of specs, split outside parentheses:
    ``"resnet18(num_classes=0)=a.pth,efficientnet_b0(out_indices=(2,3))"`` gives two specs."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif ch in ",\n" and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]

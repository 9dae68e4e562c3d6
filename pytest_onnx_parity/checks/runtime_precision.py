"""Judged by what actually ran: a runtime that computed in a lower precision than the file asks for.

OpenVINO's CPU plugin runs a float32 file in bf16 on a CPU with AVX512_BF16 or AMX unless told otherwise
(``INFERENCE_PRECISION_HINT``); its outputs then differ from torch by ~1e-2 of their RMS, and nothing tells
the user. The runner reads the precision back from the compiled model (``RuntimeInfo.precision``, and in
``precision_reason`` the CPU feature that made it the default); these pure functions turn it into the verdict:

* :func:`precision_mismatch`: the failure message when the runtime ran a lower precision than the file's (or
  than the one the user declared), naming the precision, why, and the fix;
* :func:`effective_profile`: the precision profile (``tolerances.precision_profile``) to judge the run by: the
  file's own, or the lower precision the user declared (``openvino(INFERENCE_PRECISION_HINT=bf16)``: the
  ``bf16`` profile, each layer's own error judged as for fp16).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime.runner import RuntimeInfo

#: significant bits of each float precision: a runtime "ran lower" when it kept fewer than asked for
SIGNIFICANT_BITS = {"fp32": 24, "fp16": 11, "bf16": 8}
#: how a precision is named to a user, and OpenVINO's INFERENCE_PRECISION_HINT value for it
LONG_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16 (bf16)"}
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def _norm(precision: str | None) -> str | None:
    if precision is None:
        return None
    p = str(precision).lower()
    return {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16"}.get(p, p)


def _lower(a: str, b: str) -> bool:
    """Whether precision ``a`` keeps fewer significant bits than ``b`` (unknown names never compare lower)."""
    return SIGNIFICANT_BITS.get(a, 99) < SIGNIFICANT_BITS.get(b, 0)


def _runtime_flag(info: "RuntimeInfo", precision: str) -> str:
    name = info.runtime
    if name == "openvino":
        return f'--onnx-parity-runtime "openvino(INFERENCE_PRECISION_HINT={HINTS[precision]})"'
    return f"{name} with its option that sets the inference precision to {LONG_NAMES.get(precision, precision)}"


def precision_mismatch(file_precision: str, info: "RuntimeInfo", declared: str | None) -> str | None:
    """The failure message when ``info`` says the runtime computed in a lower precision than ``file_precision``
    (``"fp32"``, ``"fp16"``) and the user did not ``declared`` it (or declared a higher one than what ran);
    None when what ran is what was asked for. int8 files are judged by agreement, never element-wise: None."""
    file_p, ran, declared = _norm(file_precision), _norm(info.precision), _norm(declared)
    if ran is None or file_p not in SIGNIFICANT_BITS or ran not in SIGNIFICANT_BITS:
        return None
    wanted = declared if declared in SIGNIFICANT_BITS and _lower(declared, file_p) else file_p
    if not _lower(ran, wanted):
        return None
    asked = (f"declared {LONG_NAMES[wanted]}" if wanted != file_p else f"a {LONG_NAMES[file_p]} file")
    reason = info.precision_reason or "the runtime's default"
    backend = f" on {info.backend}" if info.backend else ""
    msg = (f"{info.runtime}{backend} ran {asked} in {LONG_NAMES[ran]}: {reason}. {LONG_NAMES[ran]} keeps "
           f"{SIGNIFICANT_BITS[ran]} significant bits against {SIGNIFICANT_BITS[wanted]}, so its outputs differ from "
           f"torch far beyond {LONG_NAMES[wanted]}'s tolerance whether or not the file is right. To check the file at "
           f"its own precision, run it with {_runtime_flag(info, wanted)}")
    if ran in ("bf16", "fp16"):
        msg += (f"; to check what {info.runtime} does by default, declare it: {_runtime_flag(info, ran)} (judged at "
                f"the {ran} profile)")
    return msg + "."


def effective_profile(file_precision: str, info: "RuntimeInfo", declared: str | None) -> str:
    """The name of the precision profile to judge the run by: the file's own, or the lower precision the user
    declared for the runtime (``"bf16"`` for ``openvino(INFERENCE_PRECISION_HINT=bf16)``). An undeclared lower
    precision keeps the file's profile: :func:`precision_mismatch` says why the run fails."""
    file_p, declared = _norm(file_precision) or "fp32", _norm(declared)
    if file_p not in SIGNIFICANT_BITS:  # int8: judged by agreement whatever the float parts ran in
        return file_p
    if declared in SIGNIFICANT_BITS and _lower(declared, file_p):
        return declared
    return file_p

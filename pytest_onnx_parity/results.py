"""What a parity run found: one :class:`CheckResult` per check, one :class:`ParityResult` per model.

Plain data with their JSON form (one entry of the report) and the failure text
that leads a failing gate item; no numerics, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATUSES = ("passed", "failed", "skipped", "error")


@dataclass
class CheckResult:
    name: str
    status: str  # passed | failed | skipped | error
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    #: the comparison object behind the result (a LayerComparison for ``layers``); never serialised
    comparison: Any = field(default=None, repr=False, compare=False)
    #: ``layers``: the first divergent module cut out with torch's values (layers.isolate.Isolation), which a
    #: reproducer bundle writes out; never serialised
    isolation: Any = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        # the check's own name, status and message win over same-named details (a layer comparison's summary
        # is its "message": it would hide the check's words, a blame line among them)
        return {"name": self.name, "status": self.status, "message": self.message,
                **{k: v for k, v in jsonable(self.details).items() if k not in ("name", "status", "message")}}


@dataclass
class ParityResult:
    model: str
    status: str = "error"  # passed | failed | error
    exporter: str | None = None
    opset: int | None = None
    weights: str | None = None
    data_config: dict[str, Any] | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    first_divergence: str | None = None
    cache_hit: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    onnx_path: str | None = None
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    layer_comparison: Any = None  # a LayerComparison when the layer check ran
    variant: dict[str, Any] | None = None  # the matrix point (matrix.Variant.to_dict)
    output_kind: str | None = None  # logits | embedding | features (runtime.outputs)
    data_config_source: str | None = None  # where the model's data config came from (preprocessing.dataconfig)
    runtime_info: dict[str, Any] | None = None  # what actually ran the file (runtime.runner.RuntimeInfo)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    def failure_message(self) -> str:
        if self.status == "error" and not any(c.status == "error" for c in self.checks):
            return f"{self.model}: {self.error}"
        if self.status == "error":
            parts = [f"{self.model}: inconclusive ({', '.join(c.name for c in self.checks if c.status == 'error')})"]
            parts += [f"--- {c.name} ---\n{c.message}" for c in self.checks if c.status == "error"]
            return "\n\n".join(parts)
        failed = [c for c in self.checks if c.status in ("failed", "error")]
        weights = self.check("weights")
        if weights is not None and weights.status == "failed":
            # the weights lead: with other weights every later difference is expected, and no tolerance fixes it;
            # the other failed checks get one line each (their full messages stay in the JSON report)
            others = [c for c in failed if c is not weights]
            then = f"; then {', '.join(c.name for c in others)} failed" if others else ""
            if weights.details.get("other_model") or weights.message.startswith("this file does not hold"):
                name = weights.details.get("model_name")  # a name may hold ':' (hf-hub:org/repo)
                head = (f"this file does not hold {name}'s weights" if name else
                        weights.message.split("'s weights", 1)[0] + "'s weights")
                must = ", as they must with another model's file" if others else ""
                lead = f"{head} ({self.model}: weights failed{then}{must})."
            else:
                lead = (f"{self.model}: the ONNX file's weights differ from the model's (weights failed{then}). "
                        "The weights check below says which and how to fix it; loosening a tolerance will not help.")
            parts = [lead, f"--- weights ---\n{weights.message}"]
            if others:
                parts.append("--- then failed (expected with these weights; full messages in the JSON report) ---\n"
                             + "\n".join(f"{c.name}: {brief(c.message)}" for c in others))
            return "\n\n".join(parts)
        parts = [f"{self.model}: ONNX export does not behave like the torch model "
                 f"({', '.join(c.name for c in failed)} failed)"]
        if self.first_divergence and self.layer_comparison is not None and hasattr(self.layer_comparison, "summary"):
            parts.append(self.layer_comparison.summary())
        for c in failed:
            parts.append(f"--- {c.name} ---\n{c.message}")
        return "\n\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "model": self.model, "status": self.status, "exporter": self.exporter, "opset": self.opset,
            "weights": self.weights, "data_config": self.data_config, "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement, "first_divergence": self.first_divergence,
            "cache_hit": self.cache_hit, "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "onnx_path": self.onnx_path, "error": self.error, "checks": [c.to_dict() for c in self.checks],
            "variant": self.variant, "output_kind": self.output_kind,
            "data_config_source": self.data_config_source, "runtime_info": self.runtime_info,
        })


def brief(message: str, limit: int = 200) -> str:
    """One line of a check's message: its first line (after the weights pointer), with the line after a title."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and not ln.startswith("The weights check failed")]
    if not lines:
        return ""
    text = lines[0]
    if text.endswith("!") and len(lines) > 1:  # "Logits on a random batch are not close!" says no figure
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None  # JSON has no NaN/Inf; the check's message says which
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x

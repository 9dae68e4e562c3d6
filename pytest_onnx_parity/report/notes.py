"""Lines under the summary table: what the photos said about accuracy, model by model (both sides' top-1 when it
was judged, why not when it was not)."""
from __future__ import annotations

from typing import Any


def accuracy_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per entry whose real_images check ran on a folder of the user's: accuracy judged (torch's and the
    file's top-1) or the reason it was not."""
    lines = []
    for d in results:
        real = next((c for c in d.get("checks") or [] if c.get("name") == "real_images"), None)
        if not real or "accuracy_judged" not in real:
            continue
        if real.get("accuracy_judged"):
            lines.append(f"{d['model']}: accuracy on {real.get('images')} labelled images ({real.get('labels_rule')}): "
                         f"torch top-1 {real.get('torch_top1', 0):.2f}%, ONNX top-1 {real.get('onnx_top1', 0):.2f}% "
                         f"(drop {real.get('top1_drop_pp', 0):.2f} pp)")
        elif real.get("accuracy_not_judged") and real.get("source") != "bundled sample photos":
            lines.append(f"{d['model']}: accuracy not judged: {real['accuracy_not_judged']}")
    return lines

"""Evidence for the default logits tolerance: clean-export error against planted-fault effect.

For each model and exporter: the largest |onnx - torch| on a seeded random batch,
divided by the RMS of the torch logits (clean error); and for a 1.5x error planted
in each of several layers across the depth, the smallest logit change divided by
the RMS (fault effect). The default tolerance (1e-4 x RMS, rtol 1e-4) must sit
well above the first and well below the second. Writes docs/tolerances.md.

    python benchmarks/tolerances.py
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pytest_onnx_parity import export_onnx, load_model
from pytest_onnx_parity.tolerances import DEFAULT_TOLERANCES
from pytest_onnx_parity.dataconfig import resolve_data_config
from pytest_onnx_parity.forward import ort_forward, random_batch, torch_forward

MODELS = ["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnety_002",
          "vit_tiny_patch16_224", "vit_small_patch16_224.augreg_in21k_ft_in1k", "deit_tiny_patch16_224",
          "mixer_s16_224", "swin_tiny_patch4_window7_224", "levit_128s", "ghostnet_100", "densenet121"]
EXPORTERS = ["torchscript", "dynamo"]
DOC = Path(__file__).resolve().parents[1] / "docs" / "tolerances.md"


def weight_params(model: torch.nn.Module, n: int = 6) -> list[str]:
    names = [k for k, p in model.named_parameters() if p.ndim >= 2]
    idx = np.linspace(0, len(names) - 1, n).round().astype(int)
    return [names[i] for i in sorted(set(idx))]


def main() -> None:
    cache = tempfile.mkdtemp(prefix="tol-")
    rows = []
    for name in MODELS:
        model = load_model(name)
        cfg = resolve_data_config(model)
        x = random_batch(cfg, 4, 0)
        e = torch_forward(model, x)
        rms = float(np.sqrt(np.mean(e.astype(np.float64) ** 2)))
        noise = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32) * np.float32(1e-6)
        own = float(np.abs(torch_forward(model, x + noise * np.abs(x).max()) - e).max()) / rms
        clean = {"self": own}
        for exporter in EXPORTERS:
            try:
                exp = export_onnx(model, exporter=exporter, cache_dir=cache)
                a = ort_forward(exp.session(), x)
                clean[exporter] = float(np.abs(a - e).max()) / rms
            except Exception as exc:  # a real export limitation: recorded, not hidden
                clean[exporter] = f"error: {type(exc).__name__}"
        effects = []
        for pname in weight_params(model):
            p = dict(model.named_parameters())[pname]
            with torch.no_grad():
                p.mul_(1.5)
                f = torch_forward(model, x)
                p.div_(1.5)
            effects.append((float(np.abs(f - e).max()) / rms, pname))
        worst = min(effects)
        rows.append((name, rms, clean, worst))
        print(name, rms, clean, worst, flush=True)
    rt, factor = DEFAULT_TOLERANCES["float32"]
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    lines = ["# Logits tolerance: defaults and the evidence behind them", "",
             "An element passes when `|onnx - torch| <= atol + rtol * |torch|`. `atol` and `rtol` are given together",
             "or not at all. Defaults per dtype (`pytest_onnx_parity.compare.DEFAULT_TOLERANCES`):", "",
             "| dtype | rtol | atol |", "| --- | --- | --- |"]
    for dt, (r, f) in DEFAULT_TOLERANCES.items():
        lines.append(f"| {dt} | {r:g} | {f:g} x RMS of the torch logits |")
    lines += ["", "The absolute part scales with the logits, so a model whose logits are of order 10 and one whose logits",
              "are of order 0.1 get the same relative strictness.", "",
              f"Measured by `benchmarks/tolerances.py` ({time.strftime('%Y-%m-%d')}, {machine}); random non-degenerate",
              "weights, a seeded batch of 4. *Clean* is the largest |onnx - torch| over the batch divided by the logit RMS;",
              "*fault* is the smallest logit change (same unit) caused by a 1.5x error planted in one of six weight",
              "tensors spread across the depth.", "",
              "*torch itself* is how far torch's own logits move for an input change of 1e-6 (the plugin's",
              "ill-conditioning probe); where it exceeds the tolerance, rounding alone explains any difference and the",
              "plugin reports the logits check as inconclusive instead of failed. Those rows are left out of the summary.", "",
              "| model | logit RMS | torch itself | clean, torchscript | clean, dynamo | smallest fault effect (layer) |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    cleans, weak = [], []
    for name, rms, clean, (eff, pname) in rows:
        c = [f"{v:.1e}" if isinstance(v, float) else v for v in (clean["torchscript"], clean["dynamo"])]
        ill = clean["self"] > factor
        if not ill:
            cleans += [v for k, v in clean.items() if k != "self" and isinstance(v, float)]
            weak.append(eff)
        flag = " (ill-conditioned)" if ill else ""
        lines.append(f"| {name}{flag} | {rms:.3g} | {clean['self']:.1e} | {c[0]} | {c[1]} | {eff:.2e} (`{pname}`) |")
    worst_clean = max(cleans)
    weakest = min(weak)
    lines += ["", f"Largest clean error: {worst_clean:.1e} x RMS, {factor / worst_clean:.0f}x below the default atol "
              f"({factor:g} x RMS). Weakest planted fault: {weakest:.1e} x RMS, {weakest / factor:.0f}x above it.", ""]
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

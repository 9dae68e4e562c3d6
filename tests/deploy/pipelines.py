"""Hand-written deployment preprocessing pipelines, each ``(paths, data_config) -> array``, as a team writes them.

``faithful`` follows the data config with Pillow and numpy; every other one plants one known difference.
Used by tests/test_deploy_preprocessing.py as ``module:function`` and through ``prep_cli.py`` as ``command:``.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _geometry(cfg, crop_pct=None):
    _, th, tw = cfg["input_size"]
    return th, tw, math.floor(th / (crop_pct or cfg["crop_pct"]))


def _resized_size(w, h, scale):
    return (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)


def _crop(arr, th, tw):
    h, w = arr.shape[:2]
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
    return arr[top:top + th, left:left + tw]


def _pil_pixels(path, cfg, crop_pct=None):
    th, tw, scale = _geometry(cfg, crop_pct)
    img = Image.open(path).convert("RGB")
    img = img.resize(_resized_size(*img.size, scale), PIL_FILTERS[cfg["interpolation"]])
    return _crop(np.asarray(img), th, tw)


def _normalise(pixels, mean, std, divide=True):
    x = pixels.astype(np.float32)
    if divide:
        x = x / 255.0
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def _nchw(hwc_list):
    return np.stack([a.transpose(2, 0, 1) for a in hwc_list]).astype(np.float32)


def faithful(paths, cfg):
    return _nchw([_normalise(_pil_pixels(p, cfg), cfg["mean"], cfg["std"]) for p in paths])


def faithful_nhwc(paths, cfg):
    return np.stack([_normalise(_pil_pixels(p, cfg), cfg["mean"], cfg["std"]) for p in paths])


def faithful_float64(paths, cfg):
    return faithful(paths, cfg).astype(np.float64)


def bgr(paths, cfg):  # an OpenCV decode without cvtColor, Pillow's resize
    import cv2

    out = []
    for p in paths:
        th, tw, scale = _geometry(cfg)
        arr = cv2.imread(str(p))  # BGR
        img = Image.fromarray(arr).resize(_resized_size(arr.shape[1], arr.shape[0], scale), PIL_FILTERS[cfg["interpolation"]])
        out.append(_normalise(_crop(np.asarray(img), th, tw), cfg["mean"], cfg["std"]))
    return _nchw(out)


def imagenet_mean(paths, cfg):
    return _nchw([_normalise(_pil_pixels(p, cfg), *IMAGENET) for p in paths])


def squash(paths, cfg):  # resized straight to the input size, aspect ratio lost
    _, th, tw = cfg["input_size"]
    out = [np.asarray(Image.open(p).convert("RGB").resize((tw, th), PIL_FILTERS[cfg["interpolation"]])) for p in paths]
    return _nchw([_normalise(a, cfg["mean"], cfg["std"]) for a in out])


def scale_255(paths, cfg):  # forgot to divide by 255
    return _nchw([_normalise(_pil_pixels(p, cfg), cfg["mean"], cfg["std"], divide=False) for p in paths])


def nhwc_reshaped(paths, cfg):  # HWC memory reshaped, not transposed
    arrs = [_normalise(_pil_pixels(p, cfg), cfg["mean"], cfg["std"]) for p in paths]
    return np.stack([np.ascontiguousarray(a).reshape(3, a.shape[0], a.shape[1]) for a in arrs])


def crop_875(paths, cfg):  # the ImageNet default crop_pct hard-coded
    return _nchw([_normalise(_pil_pixels(p, cfg, crop_pct=0.875), cfg["mean"], cfg["std"]) for p in paths])


def _cv2_pipeline(paths, cfg, flag_name):
    import cv2

    out = []
    for p in paths:
        th, tw, scale = _geometry(cfg)
        arr = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        size = _resized_size(arr.shape[1], arr.shape[0], scale)
        arr = cv2.resize(arr, size, interpolation=getattr(cv2, flag_name))
        out.append(_normalise(_crop(arr, th, tw), cfg["mean"], cfg["std"]))
    return _nchw(out)


def cv2_linear(paths, cfg):  # OpenCV's bilinear resize: no antialiasing
    return _cv2_pipeline(paths, cfg, "INTER_LINEAR")


def cv2_area(paths, cfg):
    return _cv2_pipeline(paths, cfg, "INTER_AREA")


def opencv_service(paths, cfg):  # the seed's service: BGR, cv2.resize squash, ImageNet mean/std
    import cv2

    _, th, tw = cfg["input_size"]
    out = [cv2.resize(cv2.imread(str(p)), (tw, th), interpolation=cv2.INTER_LINEAR) for p in paths]
    return _nchw([_normalise(a, *IMAGENET) for a in out])


def fails(paths, cfg):
    raise RuntimeError("model server config not found")


def wrong_shape(paths, cfg):
    return np.zeros((len(paths), 3, 10), np.float32)


def as_uint8(paths, cfg):
    return np.stack([_pil_pixels(p, cfg).transpose(2, 0, 1) for p in paths])

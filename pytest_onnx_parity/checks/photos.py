"""The one real-images pipeline: each photo decoded once, the torch side on timm's eval transform, the
deployment side from a preprocessor, batches through the file's runner; what the checks judge comes back
batch by batch, so memory stays flat with the folder's size.

The deployment side is a :class:`Preprocessor` slot:

``metadata``
    the file's own data config (its metadata) through :func:`~..preprocessing.transform.preprocess`;
``embedded``
    the decoded photos as uint8 pixels into a file whose graph preprocesses them;
a deployment's own (``--onnx-parity-preprocess``)
    ``module:function``, ``command:CMD``, ``tensors:DIR`` or ``canvas``
    (:mod:`..preprocessing.deploy`), given the photos' paths and the file's data config.

:func:`photo_batches` yields one :class:`PhotoBatch` per batch: the paths, torch's input (timm's transform
of the model's config), what the file was fed, torch's outputs and the file's.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ImageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..model.record import LoadedModel
    from ..preprocessing.labels import Labels, Unlabelled
    from .accuracy import PhotoTally
    from .context import CheckContext

    from ..runtime.outputs import OutputLayout
    from ..runtime.runner import Runner

BATCH = 16
PROGRESS_EVERY_S = 10.0


def timm_eval_transform(model: "torch.nn.Module | LoadedModel", test_time: bool = False,
                        image_size: int | None = None) -> Callable[[Any], "torch.Tensor"]:
    """timm's own eval transform (``timm.data.create_transform``) of the model's resolved data config."""
    import timm.data

    from ..preprocessing.dataconfig import DATA_CONFIG_FIELDS, apply_test_time, resolve_data_config, sized_config

    cfg = resolve_data_config(model)
    if test_time:
        cfg = apply_test_time(cfg)
    cfg = sized_config(cfg, image_size)
    return timm.data.create_transform(**{k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in DATA_CONFIG_FIELDS},
                                      is_training=False)


class Preprocessor:
    """The deployment side of the pipeline. ``per_image``: ``one(image)`` runs on worker threads beside timm's
    transform; otherwise ``batch(paths, images)`` gets a whole batch. ``tensors``: it gives float32 NCHW
    (comparable with torch's input), not pixels."""

    name = "metadata"
    per_image = True
    tensors = True
    describe = "the file's metadata + preprocess"

    def one(self, image: Any) -> Any:
        raise NotImplementedError

    def batch(self, paths: Sequence[Path], images: Sequence[Any]) -> Any:
        raise NotImplementedError

    def layout_seen(self) -> str | None:
        return None


class MetadataPreprocessor(Preprocessor):
    """The file's own data config through :func:`preprocess` (what a deployment reading the metadata runs)."""

    def __init__(self, onnx_path: Path, test_time: bool = False, image_size: int | None = None) -> None:
        from ..onnxfile.metadata import read_data_config
        from ..preprocessing.dataconfig import sized_config
        from ..preprocessing.transform import EvalTransform

        config: Any = str(onnx_path) if image_size is None else sized_config(
            read_data_config(onnx_path, test_time=test_time), image_size)
        self._tf = EvalTransform.from_config(config, test_time=test_time and image_size is None)

    def one(self, image: Any) -> np.ndarray:
        return self._tf(image)


class EmbeddedPreprocessor(Preprocessor):
    """A file with preprocessing in its graph: the decoded photos themselves, as uint8 pixels."""

    name = "embedded"
    tensors = False
    describe = "raw pixels into the file's own preprocessing graph"

    def one(self, image: Any) -> Any:
        return image


class DeploymentPreprocessor(Preprocessor):
    """A deployment's own preprocessing (:mod:`..preprocessing.deploy`), given a batch of paths and the file's
    data config (the model's own when the file carries none)."""

    per_image = False

    def __init__(self, spec: str, data_config: dict[str, Any], rootdir: str | None = None) -> None:
        from ..preprocessing.deploy import open_preprocessor

        self.name = spec
        self.describe = f"your preprocessing {spec}"
        self._pre = open_preprocessor(spec, rootdir=rootdir)
        self._config = data_config

    def batch(self, paths: Sequence[Path], images: Sequence[Any]) -> np.ndarray:
        return self._pre([Path(p) for p in paths], dict(self._config))

    def layout_seen(self) -> str | None:
        return getattr(self._pre, "layout_seen", None)


@dataclass
class PhotoBatch:
    paths: list[Path]
    x: np.ndarray  # torch's input: timm's transform of the model's config, float32 NCHW
    fed: Any  # what the file got: float32 NCHW (tensors) or decoded photos (embedded)
    expected: np.ndarray  # torch's outputs, flat (N, D)
    actual: np.ndarray  # the file's, the same way
    layout: "OutputLayout"
    input_diff: float | None  # max |x - fed| when both are tensors of one shape, else None


def _decode(paths: Sequence[Path], mode: str, pool: ThreadPoolExecutor) -> list[Any]:
    from ..preprocessing.decode import open_image
    from ..preprocessing.imagefiles import bad_files_message

    def one(path: Path) -> Any:
        try:
            return open_image(path, mode)
        except ImageError as exc:
            return str(exc)

    out = list(pool.map(one, paths))
    bad = [o for o in out if isinstance(o, str)]
    if bad:
        raise ImageError(bad_files_message(bad))
    return out


def run_file(runner: "Runner", fed: Any, tensors: bool, outputs: list[str] | None = None) -> np.ndarray:
    """The file's chosen outputs, flat (N, D), on what a preprocessor fed it."""
    from ..runtime.feeds import embedded_outputs
    from ..runtime.forward import ort_forward
    from ..runtime.outputs import flatten

    if tensors:
        return ort_forward(runner, fed, outputs)
    return flatten(embedded_outputs(runner, list(fed)))


def photo_batches(model: "LoadedModel", paths: Sequence[Path], pre: Preprocessor, runner: "Runner", *,
                  test_time: bool = False, image_size: int | None = None, batch: int = BATCH,
                  progress: Callable[[int], None] | None = None) -> Iterator[PhotoBatch]:
    """Both sides on ``paths``, ``batch`` photos at a time: each photo decoded once (in the model's colour mode
    for torch; RGB pixels for an embedded file), timm's transform of the record's data config and the preprocessor
    on worker threads."""
    from ..preprocessing.images import model_image_mode
    from ..runtime.forward import torch_forward_layout

    torch_tf = timm_eval_transform(model, test_time, image_size)
    mode = model_image_mode(model)
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), batch):
            chunk = [Path(p) for p in paths[start:start + batch]]
            images = _decode(chunk, mode, pool)
            x = np.stack(list(pool.map(lambda im: torch_tf(im).numpy(), images)))
            side_images = images if (mode == "RGB" or pre.tensors) else _decode(chunk, "RGB", pool)
            if pre.per_image:
                outs = list(pool.map(pre.one, side_images))
                fed = np.stack(outs) if pre.tensors else outs
            else:
                fed = pre.batch(chunk, side_images)
            diff = None
            if pre.tensors and isinstance(fed, np.ndarray) and fed.shape == x.shape:
                diff = float(np.abs(x - fed).max())
            elif pre.tensors:
                raise ShapeMismatch(tuple(x.shape), tuple(np.shape(fed)), pre.describe)
            e, layout = torch_forward_layout(model.module, x)
            a = run_file(runner, fed, pre.tensors)
            yield PhotoBatch(chunk, x, fed, e, a, layout, diff)
            if progress is not None:
                progress(start + len(chunk))


class ShapeMismatch(Exception):
    """The deployment side gave inputs of another shape than timm's transform: nothing can be compared."""

    def __init__(self, torch_shape: tuple[int, ...], fed_shape: tuple[int, ...], describe: str) -> None:
        super().__init__(f"{torch_shape} vs {fed_shape}")
        self.torch_shape, self.fed_shape, self.describe = torch_shape, fed_shape, describe


def preprocessor_for(ctx: "CheckContext") -> "Preprocessor":
    """The deployment side of this run: the deployment's own (``preprocess``), the embedded graph, or the file's
    metadata through :func:`preprocess`."""
    o = ctx.options
    if (o.preprocess or "metadata") != "metadata":
        config = dict(ctx.export.data_config or ctx.model_config)
        if o.image_size is not None:
            from ..preprocessing.dataconfig import sized_config

            config = sized_config(config, o.image_size)
        return DeploymentPreprocessor(o.preprocess, config, o.rootdir)
    if ctx.embedded:
        return EmbeddedPreprocessor()
    return MetadataPreprocessor(ctx.path, o.test_time, o.image_size)


def photo_set(ctx: "CheckContext") -> "Labels | Unlabelled":
    """The run's photos, labelled or not (and why not): the ``images`` folder, else the bundled photos."""
    from ..preprocessing.images import gate_image_paths
    from ..preprocessing.labels import Unlabelled, read_labels

    o = ctx.options
    if not o.images:
        return Unlabelled(gate_image_paths(None), "the bundled sample photos carry no labels")
    return read_labels(o.images, num_classes=getattr(ctx.model, "num_classes", None), labels_file=o.labels)


def stream(ctx: "CheckContext", pre: "Preprocessor", found: "Labels | Unlabelled", *,
           extra_runners: dict[str, Any] | None = None,
           keep: int | None = -1) -> "tuple[PhotoTally, Any, dict[str, PhotoTally]]":
    """Every photo through both sides, tallied; ``extra_runners``: other runners of the same file fed the same
    inputs (the int8 file at another optimisation level), each tallied on its own. Returns the tally, the output
    layout and the extra tallies. ``keep``: how many photos' outputs are kept whole (-1: the default
    :data:`~.accuracy.KEEP_IMAGES`; None: all, for the int8
    verdict, which reads every photo's logits: photos x classes floats, never the photos themselves)."""
    from ..preprocessing.labels import Labels
    from .accuracy import PhotoTally

    o = ctx.options
    targets = found.targets if isinstance(found, Labels) else None
    from .accuracy import KEEP_IMAGES

    limit = KEEP_IMAGES if keep == -1 else keep if keep is not None else 10 ** 12
    tally = PhotoTally(targets, keep=limit)
    extras = {k: PhotoTally(targets, keep=limit) for k in (extra_runners or {})}
    last = [time.perf_counter()]
    total = len(found.paths)

    def progress(done: int) -> None:
        if time.perf_counter() - last[0] > PROGRESS_EVERY_S:
            ctx.progress(f"real images {done}/{total}")
            last[0] = time.perf_counter()

    layout = None
    for b in photo_batches(ctx.loaded, found.paths, pre, ctx.session, test_time=o.test_time, image_size=o.image_size,
                           progress=progress):
        layout = b.layout
        tally.add(b.x, b.expected, b.actual, b.input_diff, classes=layout.kind == "logits")
        if not pre.tensors:
            tally.sizes.update(getattr(im, "size", None) for im in b.fed)
        for name, runner in (extra_runners or {}).items():
            extras[name].add(b.x, b.expected, run_file(runner, b.fed, pre.tensors), b.input_diff,
                             classes=layout.kind == "logits")
    return tally, layout, extras

"""The deployment matrix: axes, variants, and the files and sessions each variant runs on.

A gate run crosses its models with seven axes (docs/matrix.md):

``exporter``, ``opset``
    which file is made (one export per model, exporter, opset and dynamic-size need);
``precision``
    ``fp32`` (the export itself), ``fp16`` or ``int8`` (derived from it, cached under their own keys);
``ort_opt``
    ONNX Runtime's graph optimisation level (``disabled``, ``basic``, ``extended``, ``all``);
``provider``
    the execution provider; one this onnxruntime build lacks makes a skipped item;
``image_size``
    the input size checked (``None``: the model's own); any size given makes the export
    dynamic in height and width, and every size is checked from that one file;
``preprocessing``
    ``external`` (the deployment runs :func:`preprocess`) or ``embedded`` (the file takes pixels).

Each combination is one :class:`Variant`; its item id names only the axes given more
than one value. Nothing here imports torch, onnx or onnxruntime at import time.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .errors import OnnxParityError
from .options import ORT_OPT_LEVELS
from .tolerances import PRECISION_PROFILES

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch

    from .export import OnnxExport
    from .options import ParityOptions

__all__ = [
    "AXES", "DEFAULT_PROVIDER", "ORT_OPT_LEVELS", "PRECISIONS", "Variant", "VariantSkip", "convert_precision",
    "item_id", "missing_provider", "shard_pairs", "variant_export",
    "variants_of", "varying_axes",
]

AXES = ("exporter", "opset", "precision", "ort_opt", "provider", "image_size", "preprocessing")
PRECISIONS = tuple(PRECISION_PROFILES)  # the precisions with a tolerance profile (tolerances.py, imports nothing heavy)
DEFAULT_PROVIDER = "CPUExecutionProvider"
PREPROCESSING = ("external", "embedded")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096


class VariantSkip(OnnxParityError):
    """This variant cannot be checked here (a provider this build lacks, a size the model cannot take).

    The gate reports it as a skipped item with this message as the reason.
    """


# -- parsing (settings.py calls these; errors are ValueErrors naming the value) ---------------------------


def split_list(v: Any) -> list[str]:
    items = v if isinstance(v, (list, tuple)) else re.split(r"[,\s]+", str(v))
    out = [str(s).strip() for s in items if str(s).strip()]
    if not out:
        raise ValueError("expected a comma-separated list")
    return list(dict.fromkeys(out))  # order kept, duplicates dropped


def choice_list(*choices: str) -> Any:
    def parse(v: Any) -> tuple[str, ...]:
        vals = split_list(v)
        bad = [x for x in vals if x not in choices]
        if bad:
            raise ValueError(f"choose one of {', '.join(choices)} or a comma list of them ({', '.join(map(repr, bad))} "
                             f"{'is' if len(bad) == 1 else 'are'} not)")
        return tuple(vals)
    return parse


def parse_opsets(v: Any) -> tuple[int, ...]:
    out = []
    for x in split_list(v):
        if not x.isdigit() or not 7 <= int(x) <= 30:
            raise ValueError(f"{x}: expected integers from 7 to 30, e.g. 17,18")
        out.append(int(x))
    return tuple(out)


def parse_providers(v: Any) -> tuple[str, ...]:
    vals = split_list(v)
    bad = [x for x in vals if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*ExecutionProvider", x)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: expected ONNX Runtime provider names such as {DEFAULT_PROVIDER},"
                         "CUDAExecutionProvider")
    return tuple(vals)


def parse_image_sizes(v: Any) -> tuple[int, ...]:
    out = []
    for x in split_list(v):
        if not x.isdigit() or not MIN_IMAGE_SIZE <= int(x) <= MAX_IMAGE_SIZE:
            raise ValueError(f"{x}: expected square sizes in pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, e.g. 224,288")
        out.append(int(x))
    return tuple(out)


# -- variants ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One point of the matrix; ``image_size`` None is the model's own size."""

    exporter: str = "dynamo"
    opset: int | None = None
    precision: str = "fp32"
    ort_opt: str = "all"
    provider: str = DEFAULT_PROVIDER
    image_size: int | None = None
    preprocessing: str = "external"
    dynamic_size: bool = False  # sizes were given: the export is dynamic in H and W

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dynamic_size")
        return d

    def value(self, axis: str) -> str:
        v = getattr(self, axis)
        if axis == "opset":
            return f"opset{v}" if v is not None else "opset-default"
        if axis == "provider":
            return str(v).replace("ExecutionProvider", "") or str(v)
        if axis == "image_size":
            return f"{v}px" if v is not None else "native"
        if axis == "ort_opt":
            return f"opt-{v}"
        return str(v)

    def parity_options(self) -> dict[str, Any]:
        """The ParityOptions fields this variant sets."""
        return {"exporter": self.exporter, "opset": self.opset, "precision": self.precision, "ort_opt": self.ort_opt,
                "provider": self.provider, "image_size": self.image_size,
                "embed_preprocessing": self.preprocessing == "embedded", "dynamic_size": self.dynamic_size}


def variants_of(settings: Any) -> list[Variant]:
    """Every combination of the settings' axes, in a stable order."""
    sizes: Sequence[int | None] = tuple(settings.image_size) or (None,)
    pre = ("external", "embedded") if settings.embed_preprocessing else ("external",)
    return [Variant(e, o, p, opt, prov, size, pp, dynamic_size=bool(settings.image_size))
            for e, o, p, opt, prov, size, pp in itertools.product(
                settings.exporter, settings.opset or (None,), settings.precision, settings.ort_opt,
                settings.providers, sizes, pre)]


def varying_axes(variants: Iterable[Variant]) -> tuple[str, ...]:
    vs = list(variants)
    return tuple(a for a in AXES if len({getattr(v, a) for v in vs}) > 1)


def item_id(spec_text: str, variant: Variant, varying: Sequence[str]) -> str:
    """``onnx-parity[<spec>-<values>]``, naming only the axes that vary."""
    parts = [spec_text] + [variant.value(a) for a in varying]
    return f"onnx-parity[{'-'.join(parts)}]"


def shard_pairs(pairs: list[tuple[Any, Variant]], shard: tuple[int, int] | None) -> list[tuple[Any, Variant]]:
    """Share K of N of the (spec, variant) items, deterministic and balanced.

    Items that share an export (spec, exporter, opset) stay on one machine when there are at
    least N such groups, so each file is exported once across the fleet; otherwise items
    are dealt round-robin one by one.
    """
    if not shard:
        return pairs
    k, n = shard

    def group(p: tuple[Any, Variant]) -> tuple[str, str, str]:
        return p[0].text, p[1].exporter, str(p[1].opset)

    groups = sorted({group(p) for p in pairs})
    if len(groups) >= n:
        chosen = {g for i, g in enumerate(groups) if i % n == k - 1}
        return [p for p in pairs if group(p) in chosen]
    keyed = sorted(range(len(pairs)), key=lambda i: (group(pairs[i]), repr(pairs[i][1])))
    picked = {i for j, i in enumerate(keyed) if j % n == k - 1}
    return [p for i, p in enumerate(pairs) if i in picked]


# -- runtime settings ----------------------------------------------------------------------------------------


def missing_provider(provider: str) -> str | None:
    """Why ``provider`` cannot run here (None when this onnxruntime build has it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider in available:
        return None
    return (f"execution provider {provider} is not in this onnxruntime build (available: {', '.join(available)}); "
            f"install the onnxruntime package that ships it (e.g. onnxruntime-gpu for CUDAExecutionProvider) and run "
            "on a machine that has its device")


# -- sizes ------------------------------------------------------------------------------------------------


def native_size(config: dict[str, Any]) -> int | list[int]:
    h, w = config["input_size"][1:]
    return int(h) if h == w else [int(h), int(w)]


def load_sized_model(spec: Any, *, weights: str | None, seed: int) -> "torch.nn.Module":
    """The model built to take other input sizes: ``dynamic_img_size=True`` where timm's constructor
    has it (ViTs and kin; the weights are the same), the plain model otherwise (CNNs)."""
    from .models import load_model

    try:
        return load_model(spec, weights, seed=seed, dynamic_img_size=True)
    except OnnxParityError as exc:  # SpecError, WeightsError: the constructor has no such argument
        if "dynamic_img_size" not in str(exc):
            raise
    return load_model(spec, weights, seed=seed)


def check_size(model: "torch.nn.Module", config: dict[str, Any], image_size: int | None) -> None:
    """Raise :class:`VariantSkip` when the torch model itself cannot take ``image_size``."""
    if image_size is None:
        return
    import torch

    c = config["input_size"][0]
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - any failure of the model itself means "cannot take it"
        reason = " ".join(str(exc).split())[:300]
        raise VariantSkip(f"the torch model cannot take {image_size}x{image_size} images ({type(exc).__name__}: "
                          f"{reason}); check sizes this architecture accepts (e.g. a multiple of its patch size "
                          "or stride)") from None


def build_model(model_arg: Any, options: "ParityOptions") -> "torch.nn.Module":
    """The torch model of a run with image sizes: a spec built by :func:`load_sized_model`, a module as given."""
    if isinstance(model_arg, str) or type(model_arg).__name__ == "ModelSpec":
        return load_sized_model(model_arg, weights=options.weights, seed=options.seed)
    return model_arg


def adopt_given_file(run: Any, path: Path) -> None:
    """A file made elsewhere (a ParityRun's ``onnx=``): its precision and embedded preprocessing come from its
    metadata; an embedded file's model part is cut out for the per-layer check."""
    from .dataconfig import read_metadata
    from .pregraph import embedded_info

    o = run.options
    precision = read_metadata(path).get("onnx_parity.precision")
    if o.precision == "fp32" and precision in ("fp16", "int8"):
        o.precision = precision
    run.model_part = path
    if embedded_info(path) is not None:
        import tempfile

        from .embedded import extract_model_part

        run.embedded = o.embed_preprocessing = True
        run._tmpdir = run._tmpdir or tempfile.mkdtemp(prefix="onnx-parity-")
        run.model_part = extract_model_part(path, Path(run._tmpdir) / "model-part.onnx")
    run.result.variant = variant_dict(o, run.model)


def real_images_check(run: Any) -> Any:
    """The real_images check of a ParityRun, by variant: raw pixels through an embedded file, the int8
    verdict, or the end-to-end check at the variant's image size."""
    o = run.options
    if run.embedded:
        from .embedded import check_real_images_embedded

        return check_real_images_embedded(run.model, run.session(), o)
    if o.precision == "int8":
        check = check_int8_real(run.model, run.export.path, run.session(), o, run.result.weights == "random")
        if check.details.get("top1_agreement") is not None:  # the entry's top1_agreement: the int8 verdict's
            run.result.top1_agreement = check.details["top1_agreement"]
        return check
    from .realcheck import check_real_images

    return check_real_images(run.model, run.export.path, run.session(), o, run.progress)


def check_variant(model: "torch.nn.Module", options: "ParityOptions") -> None:
    """Raise :class:`VariantSkip` when this variant cannot be checked for this model, naming why."""
    from .dataconfig import resolve_data_config

    spec = getattr(model, "onnx_parity_spec", None)
    if options.precision == "int8" and spec is not None and spec.weights_kind == "random":
        raise VariantSkip(
            "int8 with random weights: an int8 file is judged by top-1 agreement and accuracy on real images, and with "
            "random weights both sides are ~0% accurate, so that verdict would check nothing. Give the model real "
            "weights (NAME=pretrained or NAME=/path/to/checkpoint.safetensors)")
    if options.exporter == "dynamo" and options.opset is not None and options.opset < 18:
        raise VariantSkip(f"the dynamo exporter writes opset 18 or newer, not {options.opset}: this combination "
                          "exists only for the TorchScript exporter")
    if options.embed_preprocessing and options.image_size is not None:
        raise VariantSkip("embedded preprocessing is checked at the model's own size: its graph resizes and crops "
                          "to the data config's input size, whatever --onnx-parity-image-size says")
    check_size(model, resolve_data_config(model), options.image_size)


def variant_dict(options: "ParityOptions", model: "torch.nn.Module | None" = None) -> dict[str, Any]:
    """The report's ``variant`` of a run with these options (image_size: the size checked)."""
    size: Any = options.image_size
    if size is None and model is not None:
        try:
            from .dataconfig import resolve_data_config

            size = native_size(resolve_data_config(model))
        except Exception:  # noqa: BLE001 - a module timm cannot resolve: the size stays unknown
            size = None
    return Variant(options.exporter, options.opset, options.precision, options.ort_opt, options.provider, size,
                   "embedded" if options.embed_preprocessing else "external").to_dict()


def check_int8_real(model: "torch.nn.Module", path: Path, session: "onnxruntime.InferenceSession",
                    options: "ParityOptions", random_weights: bool) -> Any:
    """The int8 verdict (precision profile, quantize.int8_verdict) on real images, as the real_images check.

    At a variant's optimisation level other than ``disabled`` the file also runs with ONNX Runtime's
    optimisations disabled on the same images: int8 kernels (fused or not, and by the CPU's instruction
    set) round differently, so the details and the message say whether the classes depend on the level
    (quantize.compare_opt_levels); the verdict itself is the variant's level's."""
    import numpy as np

    from .forward import ort_forward, torch_forward
    from .images import labelled_folder, real_batch
    from .quantize import compare_opt_levels, int8_verdict
    from .results import CheckResult

    labelled = labelled_folder(options.images) if options.images else None
    source: Any = [p for p, _ in labelled] if labelled else options.images
    from .dataconfig import read_data_config, sized_config

    config = sized_config(read_data_config(path, test_time=options.test_time), options.image_size)
    x, paths = real_batch(config, source)
    e = np.concatenate([torch_forward(model, x[i:i + 16]) for i in range(0, len(x), 16)])
    a = np.concatenate([ort_forward(session, x[i:i + 16]) for i in range(0, len(x), 16)])
    labels = np.asarray([y for _, y in labelled]) if labelled else None
    given = {"min_top1_agreement": options.int8_min_agreement, "max_accuracy_drop": options.int8_max_accuracy_drop}
    kw = {k: x for k, x in given.items() if x is not None}
    v = int8_verdict(e, a, labels, random_weights=random_weights, **kw)
    details, message = dict(v.figures), v.message
    details["opt_level"] = options.ort_opt
    if v.status != "skipped" and options.ort_opt != "disabled":
        from .export import make_session

        plain = make_session(path, ort_opt="disabled", provider=options.provider)
        a0 = np.concatenate([ort_forward(plain, x[i:i + 16]) for i in range(0, len(x), 16)])
        v0 = int8_verdict(e, a0, labels, **kw)
        figures, sentence = compare_opt_levels(e, a, a0, opt_level=options.ort_opt, names=[Path(p).name for p in paths])
        details.update(figures, verdict_disabled=v0.status)
        message = message.rstrip(".") + ". " + sentence + "."
        if v0.status != v.status:
            message += f" With optimisations disabled the verdict would be {v0.status}."
    return CheckResult("real_images", v.status, message, details)


# -- files of a variant -----------------------------------------------------------------------------------


def int8_format(reduce_range: bool) -> str:
    """The int8 settings of the package's own int8 files, as a cache-key value: U8S8 (uint8 activations, int8
    weights), with 7-bit weights (``reduce_range``) on CPUs where ONNX Runtime recommends it (cpu.py)."""
    return "U8S8-reduce_range" if reduce_range else "U8S8"


def convert_precision(src: Path, dst: Path, precision: str, *, images: str | None = None,
                      reduce_range: bool | None = None) -> None:
    """Write the ``precision`` version of the float32 file ``src`` to ``dst``: the one call into precision.py.

    ``reduce_range`` (int8): 7-bit weights; ``None`` follows ONNX Runtime's advice for this CPU
    (:func:`pytest_onnx_parity.cpu.int8_reduce_range`)."""
    if precision == "fp16":
        from .precision import to_fp16

        to_fp16(src, dst)
    elif precision == "int8":
        from .quantize import calibration_images, to_int8

        to_int8(src, dst, calibration_images(src, images), mode="static", per_channel=True, reduce_range=reduce_range)
    else:
        raise VariantSkip(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def variant_export(base: "OnnxExport", options: "ParityOptions", *, workdir: str | None) -> tuple["OnnxExport", Path]:
    """The file a variant runs (``base`` converted to its precision, preprocessing embedded when asked)
    and the path of its model part (the file before embedding: what the per-layer check reads).

    Derived files are cached beside ``base`` under keys of their own (see ``export.derive_export``);
    without the cache they go into ``workdir``. An int8 file's key holds its int8 format (reduce_range or
    not, chosen by this CPU's instruction set), so a cache shared between CPUs never hands one CPU's file
    to the other.
    """
    from .export import derive_export

    out = base
    if options.precision != "fp32":
        prec = options.precision
        fields: dict[str, Any] = {"precision": prec, "calibration": options.images if prec == "int8" else None}
        rr: bool | None = None
        if prec == "int8":
            from .quantize import int8_reduce_range_choice

            rr = int8_reduce_range_choice()
            fields["int8_format"] = int8_format(rr)
        out = derive_export(out, fields, lambda s, d: convert_precision(s, d, prec, images=options.images, reduce_range=rr),
                            cache_dir=options.cache_dir, use_cache=options.use_cache, workdir=workdir)
    model_part = out.path
    if options.embed_preprocessing:
        from .embedded import write_embedded

        out = derive_export(out, {"preprocessing": "embedded", "layout": "NHWC"}, write_embedded,
                            cache_dir=options.cache_dir, use_cache=options.use_cache, workdir=workdir)
    return out, model_part

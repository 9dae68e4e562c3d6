"""The deployment matrix: parsing the axes' values, the variants, their item ids and shards, and what a
variant needs of the model (:func:`check_variant`) and of a file made elsewhere (:func:`given_file_variant`).
The file a variant runs is :mod:`.onnxfile.variants`; the axes' vocabulary is :mod:`.axes`.

A gate run crosses its models with eight axes (docs/matrix.md):

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
    ``external`` (the deployment runs :func:`preprocess`) or ``embedded`` (the file takes pixels);
``simplifier``
    ``none`` (the export as it is), ``onnxslim`` or ``onnxsim`` (the export simplified, cached).

Each combination is one :class:`Variant`; its item id names only the axes given more
than one value. Nothing here imports torch, onnx or onnxruntime at import time.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .axes import AXES, DEFAULT_PREPROCESS, DEFAULT_PROVIDER, DEFAULT_RUNTIME
from .errors import VariantSkip
from .model.sizes import check_size, native_size
from .specs.optiontable import IMAGE_SIZES, OPSETS

if TYPE_CHECKING:  # pragma: no cover
    from .model.record import LoadedModel
    from .options import ParityOptions

__all__ = [
    "Variant", "VariantSkip", "check_variant", "given_file_variant", "item_id", "shard_pairs", "variant_dict",
    "variants_of", "varying_axes",
]

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = IMAGE_SIZES  # the table's range, as one run checks it


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
        if not x.isdigit() or not OPSETS[0] <= int(x) <= OPSETS[1]:
            raise ValueError(f"{x}: expected integers from {OPSETS[0]} to {OPSETS[1]}, e.g. 17,18")
        out.append(int(x))
    return tuple(out)


def split_named(v: Any) -> list[str]:
    """A comma list whose values may carry options in parentheses (``openvino(A=1,B=2),onnxruntime``): split
    outside parentheses, order kept, duplicates dropped."""
    from .specs.grammar import split_specs

    items = [p for item in v for p in split_specs(str(item))] if isinstance(v, (list, tuple)) else split_specs(str(v))
    out = [s.strip() for s in items if s.strip()]
    if not out:
        raise ValueError("expected a comma-separated list")
    return list(dict.fromkeys(out))


def _named_list(v: Any, parse: Callable[[str], Any]) -> tuple[str, ...]:
    from .errors import SpecError

    vals = split_named(v)
    for x in vals:
        try:
            parse(x)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    return tuple(vals)


def parse_providers(v: Any) -> tuple[str, ...]:
    """ONNX Runtime execution providers, each with options in parentheses: ``OpenVINOExecutionProvider(device_type=CPU)``."""
    from .runtime.runner import parse_provider

    return _named_list(v, parse_provider)


def parse_runtimes(v: Any) -> tuple[str, ...]:
    """Where the file runs (``axes.RUNTIMES``), each with options in parentheses: ``openvino(INFERENCE_PRECISION_HINT=f32)``."""
    from .runtime.runner import parse_runtime

    return _named_list(v, parse_runtime)


def parse_preprocess(v: Any) -> tuple[str, ...]:
    """The deployment's preprocessing: ``metadata`` (the file's own), ``module:function``, ``command:CMD``,
    ``tensors:DIR``, ``canvas[(options)]``."""
    from .axes import DEFAULT_PREPROCESS

    def check(text: str) -> None:
        if text == DEFAULT_PREPROCESS:
            return
        from .preprocessing.deploy import parse_preprocess as parse

        parse(text)

    return _named_list(v, check)


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
    simplifier: str = "none"  # the export as it is, or simplified (onnxfile/simplify.py)
    runtime: str = DEFAULT_RUNTIME  # where the file runs, as given (runtime/runner.py)
    preprocess: str = DEFAULT_PREPROCESS  # the deployment's own preprocessing, as given (checks/photos.py)

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
        if axis == "simplifier" and v == "none":
            return "unsimplified"
        return str(v)

    def parity_options(self) -> dict[str, Any]:
        """The ParityOptions fields this variant sets."""
        return {"exporter": self.exporter, "opset": self.opset, "precision": self.precision, "ort_opt": self.ort_opt,
                "provider": self.provider, "image_size": self.image_size,
                "embed_preprocessing": self.preprocessing == "embedded", "dynamic_size": self.dynamic_size,
                "simplifier": self.simplifier, "runtime": self.runtime, "preprocess": self.preprocess}


def variants_of(settings: Any) -> list[Variant]:
    """Every combination of the settings' axes, in a stable order."""
    sizes: Sequence[int | None] = tuple(settings.image_size) or (None,)
    pre = ("external", "embedded") if settings.embed_preprocessing else ("external",)
    return [Variant(e, o, p, opt, prov, size, pp, dynamic_size=bool(settings.image_size), simplifier=simp, runtime=rt,
                    preprocess=dp)
            for e, o, p, opt, prov, size, pp, simp, rt, dp in itertools.product(
                settings.exporter, settings.opset or (None,), settings.precision, settings.ort_opt,
                settings.providers, sizes, pre, getattr(settings, "simplifier", None) or ("none",),
                getattr(settings, "runtime", None) or (DEFAULT_RUNTIME,),
                getattr(settings, "preprocess", None) or (DEFAULT_PREPROCESS,))]


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


# -- sizes ------------------------------------------------------------------------------------------------


def given_file_variant(path: Path, precision: str, workdir: Callable[[], str]) -> tuple[str, bool, Path]:
    """A file made elsewhere: ``(precision, embedded, model_part)``. Its precision comes from its metadata, else
    from its graph (float16 weights, quantised ops), and its embedded preprocessing from its metadata (a float32
    option gives way to the file's fp16 or int8); an embedded file's
    model part (what the per-layer check reads) is cut out into ``workdir()``."""
    from .onnxfile.pregraph import embedded_info
    from .onnxfile.file_precision import file_precision

    said = file_precision(path)  # its metadata, else what its graph shows (a float16 file converted elsewhere)
    if precision == "fp32" and said in ("fp16", "int8"):
        precision = said
    if embedded_info(path) is None:
        return precision, False, path
    from .onnxfile.embedded import extract_model_part

    return precision, True, extract_model_part(path, Path(workdir()) / "model-part.onnx")


def check_variant(model: "LoadedModel", options: "ParityOptions") -> None:
    """Raise :class:`VariantSkip` when this variant cannot be checked for this model, naming why."""
    if options.precision == "int8" and model.record.random_weights:
        raise VariantSkip(
            "int8 with random weights: an int8 file is judged on real images (a classifier by top-1 agreement and "
            "accuracy, an embedding or features by cosine similarity), and with random weights both sides are ~0% "
            "accurate and good and poor quantisations look alike, so that verdict would check nothing. Give the model "
            "real weights (NAME=pretrained or NAME=/path/to/checkpoint.safetensors)")
    if options.simplifier != "none":
        from .onnxfile.simplify import simplifier_missing

        why = simplifier_missing(options.simplifier)
        if why:
            raise VariantSkip(why)
    if options.exporter == "dynamo" and options.opset is not None and options.opset < 18:
        raise VariantSkip(f"the dynamo exporter writes opset 18 or newer, not {options.opset}: this combination "
                          "exists only for the TorchScript exporter")
    if options.embed_preprocessing and options.image_size is not None:
        raise VariantSkip("embedded preprocessing is checked at the model's own size: its graph resizes and crops "
                          "to the data config's input size, whatever --onnx-parity-image-size says")
    check_size(model.module, model.record.data_config, options.image_size)


def variant_dict(options: "ParityOptions", model: "LoadedModel | None" = None) -> dict[str, Any]:
    """The report's ``variant`` of a run with these options (image_size: the size checked)."""
    size: Any = options.image_size
    if size is None and model is not None:
        size = native_size(model.record.data_config)
    return Variant(options.exporter, options.opset, options.precision, options.ort_opt, options.provider, size,
                   "embedded" if options.embed_preprocessing else "external", simplifier=options.simplifier,
                   runtime=options.runtime, preprocess=options.preprocess).to_dict()


# -- files of a variant -----------------------------------------------------------------------------------




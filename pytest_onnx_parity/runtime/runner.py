"""One small interface for every place an ONNX file runs: Python onnxruntime, onnxruntime-node,
onnxruntime-web (WASM in Node.js or in headless Chromium, WebGPU in Chromium), OpenVINO.

A :class:`Runner` is opened on a file or serialised bytes with a :class:`RunSettings` (the
variant's runtime and its options, provider and provider options, optimisation level, threads),
runs named feeds to named outputs, says what actually ran (:meth:`Runner.info`) and is closed.
Its method names are ONNX Runtime's own (``get_inputs``, ``get_outputs``, ``run``), so every
consumer written for an ``InferenceSession`` runs on any runtime unchanged.

Nothing outside ``runtime/`` builds or runs a session: :func:`open_runner` is the one door, and
:func:`runtime_missing` says why a runtime cannot run here (with the command that installs it).
Adding a runtime: a class with :meth:`Runner.open`, :meth:`Runner.missing` and the methods below,
named in :data:`RUNNERS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from ..axes import DEFAULT_PROVIDER, DEFAULT_RUNTIME, ORT_OPT_LEVELS, RUNTIMES
from ..errors import OnnxFileError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: runtime name -> "module:Class" of its runner, imported when first used
RUNNERS: dict[str, str] = {
    "onnxruntime": "pytest_onnx_parity.runtime.ort:OrtRunner",
    "onnxruntime-node": "pytest_onnx_parity.runtime.node:NodeRunner",
    "onnxruntime-web": "pytest_onnx_parity.runtime.node:NodeRunner",
    "onnxruntime-web-browser": "pytest_onnx_parity.runtime.browser:BrowserRunner",
    "onnxruntime-web-webgpu": "pytest_onnx_parity.runtime.browser:BrowserRunner",
    "openvino": "pytest_onnx_parity.runtime.openvino:OpenVinoRunner",
}

@dataclass(frozen=True)
class Named:
    """A name with ``key=value`` options, as model arguments are written: ``openvino(INFERENCE_PRECISION_HINT=f32)``,
    ``OpenVINOExecutionProvider(device_type=CPU)``. ``text`` is the value as given (what the report records)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    text: str = ""

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    def __str__(self) -> str:
        return self.text or self.name


def parse_named(text: str, *, what: str = "runtime") -> Named:
    """``NAME`` or ``NAME(key=value,...)`` (values Python literals, or bare words taken as strings)."""
    from ..specs.grammar import freeze, parse_model_args

    text = str(text).strip()
    if "(" not in text:
        if not text or ")" in text:
            raise SpecError(f"{what} {text!r}: expected NAME or NAME(key=value,...)")
        return Named(text, (), text)
    if not text.endswith(")"):
        raise SpecError(f"{what} {text!r}: expected NAME(key=value,...) ending in ')'")
    name, inner = text[:text.index("(")].strip(), text[text.index("(") + 1:-1]
    if not name:
        raise SpecError(f"{what} {text!r}: the name before '(' is missing")
    args = parse_model_args(_quote_bare_words(inner), where=f"{what} options of {name}") if inner.strip() else {}
    return Named(name, tuple((k, freeze(v)) for k, v in args.items()), text)


def _quote_bare_words(inner: str) -> str:
    """``device_type=CPU,numThreads=1`` -> ``device_type='CPU',numThreads=1``: a value that is no Python literal
    (a bare word such as CPU, f32, bfloat16) is a string, as a user of these options writes it."""
    import ast

    from ..specs.grammar import split_specs

    out = []
    for part in split_specs(inner):
        key, sep, value = part.partition("=")
        v = value.strip()
        if sep:
            try:
                ast.literal_eval(v)
            except (ValueError, SyntaxError):
                v = repr(v)
        out.append(f"{key.strip()}{sep}{v}")
    return ",".join(out)


def parse_runtime(text: str) -> Named:
    """A ``--onnx-parity-runtime`` value: one of :data:`~..axes.RUNTIMES`, with options in parentheses."""
    rt = parse_named(text, what="runtime")
    if rt.name not in RUNTIMES:
        raise SpecError(f"unknown runtime {rt.name!r}: choose one of {', '.join(RUNTIMES)}")
    return rt


def parse_provider(text: str) -> Named:
    """A ``--onnx-parity-providers`` value: an ONNX Runtime provider name, with options in parentheses."""
    import re

    p = parse_named(text, what="provider")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*ExecutionProvider", p.name):
        raise SpecError(f"{p.name}: expected ONNX Runtime provider names such as {DEFAULT_PROVIDER}, CUDAExecutionProvider")
    return p


@dataclass(frozen=True)
class RunSettings:
    """Where and how a file runs: the variant's runtime (with its options), provider (with its options, the
    ``onnxruntime`` runtime only), optimisation level and threads."""

    runtime: str = DEFAULT_RUNTIME
    provider: str = DEFAULT_PROVIDER
    ort_opt: str = "all"
    threads: int | None = None

    @property
    def runtime_spec(self) -> Named:
        return parse_runtime(self.runtime)

    @property
    def provider_spec(self) -> Named:
        return parse_provider(self.provider)

    @classmethod
    def of(cls, options: Any) -> "RunSettings":
        """The settings of a run's options (a :class:`~..options.ParityOptions` or anything with its fields)."""
        return cls(runtime=getattr(options, "runtime", None) or DEFAULT_RUNTIME,
                   provider=getattr(options, "provider", None) or DEFAULT_PROVIDER,
                   ort_opt=getattr(options, "ort_opt", None) or "all", threads=getattr(options, "threads", None))

    def at(self, **changes: Any) -> "RunSettings":
        from dataclasses import replace

        return replace(self, **changes)

    @property
    def is_default(self) -> bool:
        return self.runtime_spec.name == "onnxruntime" and self.provider_spec.name == DEFAULT_PROVIDER

    def check_level(self) -> None:
        """An optimisation level ONNX Runtime does not have is an :class:`OnnxFileError` naming the choices (every
        ONNX Runtime runner checks it on opening, in Python, Node.js or the browser)."""
        if self.ort_opt not in ORT_OPT_LEVELS:
            raise OnnxFileError(f"unknown ONNX Runtime optimisation level {self.ort_opt!r}: choose one of "
                                f"{', '.join(ORT_OPT_LEVELS)}")


@dataclass
class TensorInfo:
    """An input or output of the file as a runner sees it (ONNX Runtime's ``NodeArg`` fields)."""

    name: str
    shape: list[Any]
    type: str  # "tensor(float)", "tensor(float16)", "tensor(uint8)", ...


@dataclass
class RuntimeInfo:
    """What actually ran: the report's ``runtime_info``."""

    runtime: str
    versions: dict[str, str] = field(default_factory=dict)
    backend: str = ""
    providers: list[str] = field(default_factory=list)  # after any fallback
    threads: int | None = None
    precision: str | None = None  # the effective inference precision: "fp32", "bf16", "fp16"; None: the file's own
    precision_reason: str = ""  # why that precision (OpenVINO's default on a CPU with bf16)
    extra: dict[str, Any] = field(default_factory=dict)  # device, adapter, its features

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d.update(d.pop("extra"))
        return d


class Runner(Protocol):
    """The interface every runtime implements (see the module docstring)."""

    runtime: str

    @classmethod
    def open(cls, model: Any, settings: RunSettings, *, mem_arena: bool = True,
             config: Mapping[str, str] | None = None) -> "Runner": ...

    @classmethod
    def missing(cls, settings: RunSettings) -> str | None: ...

    def get_inputs(self) -> Sequence[TensorInfo]: ...

    def get_outputs(self) -> Sequence[TensorInfo]: ...

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"]) -> list["np.ndarray"]: ...

    def info(self) -> RuntimeInfo: ...

    def metadata(self) -> dict[str, str]:
        """The file's ``metadata_props`` (the runners without it are read from their ``path``)."""
        ...

    def close(self) -> None: ...


def runner_class(settings: RunSettings) -> Any:
    name = settings.runtime_spec.name
    module, _, cls = RUNNERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_runner(model: Any, settings: RunSettings | None = None, *, mem_arena: bool = True,
                config: Mapping[str, str] | None = None) -> Runner:
    """The one door: ``model`` (a path, serialised bytes or a ModelProto) opened on ``settings``' runtime.
    A file the runtime cannot load is an :class:`~..errors.OnnxFileError` naming the fix; a provider that
    fell back to another is a :class:`~..errors.VariantSkip` naming it."""
    settings = settings or RunSettings()
    return runner_class(settings).open(model, settings, mem_arena=mem_arena, config=config)


def runtime_missing(settings: RunSettings) -> str | None:
    """Why ``settings``' runtime (or provider) cannot run here, naming the command that installs it; None when it can."""
    return runner_class(settings).missing(settings)

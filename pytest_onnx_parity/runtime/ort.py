"""The Python onnxruntime runner: providers with their options, optimisation level, threads, log level,
and the error a file ONNX Runtime cannot load gets. A provider that falls back to another is said, never
run silently on the CPU."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..axes import DEFAULT_PROVIDER, ORT_OPT_LEVELS
from ..errors import OnnxFileError, VariantSkip
from .runner import RunSettings, RuntimeInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnxruntime

#: ONNX Runtime's log severity for every session: errors only (its warnings about unused
#: initializers and the like are noise to a user of the gate)
LOG_SEVERITY = 3


def _source(model: Any) -> tuple[Any, Path | None]:
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise OnnxFileError(f"ONNX file not found: {path}")
        return str(path), path
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString(), None
    return model, None


class OrtRunner:
    """Python onnxruntime: one ``InferenceSession`` (``.session``), ONNX Runtime's own API passed through."""

    runtime = "onnxruntime"

    def __init__(self, session: "onnxruntime.InferenceSession", settings: RunSettings) -> None:
        self.session = session
        self.settings = settings

    @classmethod
    def open(cls, model: Any, settings: RunSettings, *, mem_arena: bool = True,
             config: Mapping[str, str] | None = None) -> "OrtRunner":
        import onnxruntime as ort

        settings.check_level()
        source, path = _source(model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[settings.ort_opt])
        opts.log_severity_level = LOG_SEVERITY
        opts.enable_cpu_mem_arena = mem_arena
        threads = settings.threads or settings.runtime_spec.opts.get("intra_op_num_threads")
        if threads:
            opts.intra_op_num_threads = int(threads)
        for key, value in (config or {}).items():
            opts.add_session_config_entry(key, value)
        prov = settings.provider_spec
        providers: list[Any] = [(prov.name, {k: str(v) for k, v in prov.options})] if prov.options else [prov.name]
        try:
            session = ort.InferenceSession(source, sess_options=opts, providers=providers)
        except Exception as exc:
            what = str(path) if path is not None else "the model"
            hint = ""
            if path is not None:
                from ..onnxfile.cache import repair_hint

                hint = f" {repair_hint(path)}"
            raise OnnxFileError(f"ONNX Runtime cannot load {what}: {type(exc).__name__}: {str(exc).strip()[:500]}.{hint}") from exc
        got = session.get_providers()
        if prov.name not in got:
            raise VariantSkip(f"execution provider {prov.name} was asked for, but ONNX Runtime fell back to "
                              f"{', '.join(got)} (the provider could not start here: no device, or a library it needs is "
                              "missing); nothing was checked on it, and passing on the CPU would prove nothing about it")
        return cls(session, settings)

    @classmethod
    def missing(cls, settings: RunSettings) -> str | None:
        """Why this provider cannot run here (None when this onnxruntime build has it)."""
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed: pip install onnxruntime"
        provider = settings.provider_spec.name
        available = ort.get_available_providers()
        if provider in available:
            return None
        return (f"execution provider {provider} is not in this onnxruntime build (available: {', '.join(available)}); "
                f"install the onnxruntime package that ships it (e.g. onnxruntime-gpu for CUDAExecutionProvider) and run "
                "on a machine that has its device")

    # -- ONNX Runtime's own API --------------------------------------------------------------------------
    def get_inputs(self) -> Sequence[Any]:
        return self.session.get_inputs()

    def get_outputs(self) -> Sequence[Any]:
        return self.session.get_outputs()

    def metadata(self) -> dict[str, str]:
        """The file's ``metadata_props``, as ONNX Runtime read them."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def get_modelmeta(self) -> Any:
        return self.session.get_modelmeta()

    def get_providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"], *args: Any) -> list["np.ndarray"]:
        return self.session.run(list(output_names) if output_names else None, dict(feeds), *args)

    def run_values(self, output_names: Sequence[str], feeds: Mapping[str, "np.ndarray"]) -> list[Any]:
        """``OrtValue`` outputs (read with ``.numpy()`` when compared, freed after): the per-layer pass's many values."""
        import onnxruntime as ort

        values = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        return list(self.session.run_with_ort_values(list(output_names), values))

    def info(self) -> RuntimeInfo:
        import onnxruntime as ort

        threads = self.settings.threads
        prov = self.get_providers()
        backend = prov[0].replace("ExecutionProvider", "").lower() if prov else ""
        return RuntimeInfo(runtime=self.runtime, versions={"onnxruntime": ort.__version__}, backend=backend,
                           providers=prov, threads=threads or os.cpu_count(), precision=None,
                           extra={"provider_options": dict(self.settings.provider_spec.options),
                                  "ort_opt": self.settings.ort_opt})

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


DEFAULT = RunSettings(provider=DEFAULT_PROVIDER)

"""onnxruntime-web in headless Chromium: ``onnxruntime-web-browser`` (the WASM backend in a real page) and
``onnxruntime-web-webgpu`` (the WebGPU backend). Every runner of a Python process shares one Chromium
(:mod:`.browserhost`); a runner is one ``InferenceSession`` in its page.

Options (``onnxruntime-web-browser(numThreads=1)``): ``numThreads`` (the WASM threads; the page's default is
onnxruntime-web's), ``bundle`` (the dist file the page imports: ``ort.bundle.min.mjs`` for WASM and
``ort.webgpu.bundle.min.mjs`` for WebGPU, what ``import 'onnxruntime-web'`` and ``'onnxruntime-web/webgpu'``
give a bundler), ``timeout_s`` (per command in the page) and the onnxruntime-web session options of
:data:`SESSION_KEYS`, passed as they are; any other option is a :class:`~..errors.SpecError` naming these.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OnnxFileError, SpecError, VariantSkip
from .jsfiles import external_data, nested_config
from .runner import RunSettings, RuntimeInfo, TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .browserhost import BrowserHost

#: runtime name -> onnxruntime-web execution provider
BACKENDS = {"onnxruntime-web-browser": "wasm", "onnxruntime-web-webgpu": "webgpu"}
#: onnxruntime-web's tensor type -> numpy dtype name (float16 arrives as Float16Array or Uint16Array: same bytes)
WEB_DTYPES = {"float32": "float32", "float16": "float16", "float64": "float64", "int8": "int8", "uint8": "uint8",
              "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64",
              "uint64": "uint64", "bool": "bool"}
#: onnxruntime-web's tensor type -> ONNX Runtime's type string
ONNX_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)", "bool": "tensor(bool)",
              **{k: f"tensor({k})" for k in ("float16", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                                                 "int64", "uint64")}}
#: the WebGPU feature a float16 file needs
SHADER_F16 = "shader-f16"
#: the runner's own options
OWN_OPTIONS = ("numThreads", "bundle", "timeout_s")
#: onnxruntime-web session options passed as they are
SESSION_KEYS = ("enableMemPattern", "executionMode", "logSeverityLevel", "freeDimensionOverrides",
                "preferredOutputLocation", "enableGraphCapture")


def _model_file(model: Any) -> tuple[Path, Path | None]:
    """The file to serve, and the temporary copy of bytes or a ModelProto (the runner removes it)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise OnnxFileError(f"ONNX file not found: {path}")
        return path.resolve(), None
    import tempfile

    data = model.SerializeToString() if hasattr(model, "SerializeToString") else bytes(model)
    fd, name = tempfile.mkstemp(prefix="onnx-parity-", suffix=".onnx")  # outlives a restarted host
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name), Path(name)


def _load_request(settings: RunSettings, path: Path, *, mem_arena: bool, config: Mapping[str, str] | None) -> dict[str, Any]:
    """The host's ``load`` fields: backend, dist bundle, WASM threads, session options, external data, time limit."""
    spec = settings.runtime_spec
    opts = spec.opts
    unknown = sorted(set(opts) - set(OWN_OPTIONS) - set(SESSION_KEYS))
    if unknown:
        raise SpecError(f"{spec}: unknown option(s) {', '.join(unknown)}; {spec.name} takes "
                        f"{', '.join(OWN_OPTIONS + SESSION_KEYS)} (the optimisation level is --onnx-parity-ort-opt)")
    threads = opts.get("numThreads") or settings.threads
    options: dict[str, Any] = {"graphOptimizationLevel": settings.ort_opt, "enableCpuMemArena": bool(mem_arena),
                               **{k: v for k, v in opts.items() if k in SESSION_KEYS}}
    if config:
        options["extra"] = nested_config(config)
    return {"backend": BACKENDS[spec.name], "bundle": opts.get("bundle"), "numThreads": int(threads) if threads else None,
            "options": options, "external": external_data(path), "timeout": float(opts.get("timeout_s") or 600)}


def is_fp16_file(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], path: Path | None) -> bool:
    """Whether the file computes in float16: a float16 input or output, else float16 weights."""
    if any(t.type == "tensor(float16)" for t in [*inputs, *outputs]):
        return True
    if path is None:
        return False
    from ..onnxfile.file_precision import file_precision

    return file_precision(path) == "fp16"


class BrowserRunner:
    """One onnxruntime-web session in the process's headless Chromium."""

    def __init__(self, settings: RunSettings, path: Path, request: dict[str, Any], owned: Path | None) -> None:
        self.settings = settings
        self.runtime = settings.runtime_spec.name
        self.backend = BACKENDS[self.runtime]
        self.path = path
        self.request = request
        self._owned = owned
        self.host: BrowserHost | None = None
        self.session: str | None = None
        self._info: RuntimeInfo | None = None
        self.timeout = float(request["timeout"])
        self._load()

    def _load(self) -> None:
        from .browserhost import BrowserHostError, get_host

        self.host = get_host()
        try:
            loaded = self.host.call("load", model=str(self.path), **self.request)
        except BrowserHostError as exc:
            raise _runtime_error(self.settings, self.path, exc, self.host, "cannot load") from exc
        assert isinstance(loaded, dict)
        if not loaded["inputs"] or loaded["inputs"][0].get("type") is None:
            loaded = {**loaded, **_metadata_from_file(self.path)}
        self.loaded, self.session = loaded, loaded["session"]
        self._inputs = [self._tensor_info(m) for m in loaded["inputs"]]
        self._outputs = [self._tensor_info(m) for m in loaded["outputs"]]

    def _live_host(self) -> BrowserHost:
        """This runner's host; when it died, a new one with the file loaded again."""
        from .browserhost import get_host

        if self.session is None:
            raise OnnxFileError(f"this {self.runtime} runner was closed: open the file again")
        if get_host() is not self.host:
            self._load()
        assert self.host is not None
        return self.host

    @staticmethod
    def _tensor_info(meta: Mapping[str, Any]) -> TensorInfo:
        kind = meta.get("type")
        return TensorInfo(name=meta["name"], shape=list(meta.get("shape") or []), type=ONNX_TYPES.get(kind, str(kind)))

    @classmethod
    def open(cls, model: Any, settings: RunSettings, *, mem_arena: bool = True,
             config: Mapping[str, str] | None = None) -> BrowserRunner:
        settings.check_level()
        why = cls.missing(settings)
        if why:
            raise VariantSkip(why)
        path, owned = _model_file(model)
        try:
            return cls(settings, path, _load_request(settings, path, mem_arena=mem_arena, config=config), owned)
        except BaseException:
            if owned is not None:
                owned.unlink(missing_ok=True)
            raise

    @classmethod
    def missing(cls, settings: RunSettings) -> str | None:
        """Why this runtime cannot run here: no Node.js, no Chromium, npm packages missing, or (WebGPU) no adapter."""
        from .browserhost import browser_missing, running_host

        why = browser_missing()
        if why or BACKENDS.get(settings.runtime_spec.name) != "webgpu":
            return why
        host = running_host()
        if host is None:  # the adapter is asked only once a Chromium runs (starting one costs seconds)
            from .browserhost import get_host

            host = get_host()
        from .browserhost import BrowserHostError

        try:
            gpu = host.call("info", timeout=60)["webgpu"]  # type: ignore[index]
        except BrowserHostError as exc:
            return f"onnxruntime-web-webgpu: Chromium did not start or answer: {exc}"
        if not gpu.get("available"):
            return (f"onnxruntime-web-webgpu: Chromium has no WebGPU adapter here: {gpu.get('reason')}; run on a "
                    "machine whose GPU driver (or Vulkan with SwiftShader) Chromium can use")
        return None

    # -- ONNX Runtime's API ---------------------------------------------------------------------------------
    def get_inputs(self) -> Sequence[TensorInfo]:
        return self._inputs

    def get_outputs(self) -> Sequence[TensorInfo]:
        return self._outputs

    def get_providers(self) -> list[str]:
        return [self.backend]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], *args: Any) -> list[np.ndarray]:
        import numpy as np

        host = self._live_host()
        sent = []
        for name, value in feeds.items():
            arr = np.ascontiguousarray(value)
            kind = "bool" if arr.dtype == np.bool_ else arr.dtype.name
            if kind not in WEB_DTYPES:
                raise OnnxFileError(f"input {name}: onnxruntime-web takes no {arr.dtype} tensors")
            file = host.scratch(".bin")
            arr.tofile(file)
            sent.append({"name": name, "type": kind, "dims": list(arr.shape), "file": str(file), "cleanup": True})
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        from .browserhost import BrowserHostError

        try:
            got = host.call("run", session=self.session, feeds=sent, outputs=names, timeout=self.timeout)
        except BrowserHostError as exc:
            raise _runtime_error(self.settings, self.path, exc, host, "failed to run") from exc
        by_name = {}
        for out in got:  # type: ignore[union-attr]
            data = host.read_output(out["file"])
            by_name[out["name"]] = np.frombuffer(data, dtype=WEB_DTYPES[out["type"]]).reshape(out["dims"]).copy()
            self.last_run_ms = out.get("run_ms")
            self.last_array = out.get("array")
        return [by_name[n] for n in names]

    def info(self) -> RuntimeInfo:
        if self._info is None:
            self._info = self._make_info()
        return self._info

    def _make_info(self) -> RuntimeInfo:
        got = self._live_host().call("info", timeout=60)
        assert isinstance(got, dict)
        gpu = got.get("webgpu") or {}
        extra: dict[str, Any] = {"bundle": self.loaded.get("bundle"), "ort_opt": self.settings.ort_opt,
                                 "cross_origin_isolated": got.get("crossOriginIsolated"),
                                 "load_ms": round(float(self.loaded.get("load_ms") or 0), 1),
                                 "runtime_options": dict(self.settings.runtime_spec.options)}
        info = RuntimeInfo(runtime=self.runtime, backend=self.backend, providers=[self.backend],
                           versions={"onnxruntime-web": str(got.get("ort_version")),
                                     "chromium": str(got.get("chromium"))},
                           threads=self.loaded.get("numThreads") if self.backend == "wasm" else None, extra=extra)
        if self.backend == "webgpu":
            extra["adapter"] = gpu.get("info") if gpu.get("available") else gpu.get("reason")
            extra["features"] = list(gpu.get("features") or [])
            if is_fp16_file(self._inputs, self._outputs, self.path) and SHADER_F16 not in extra["features"]:
                extra["missing_features"] = [SHADER_F16]
                info.precision_reason = fp16_without_shader_f16(extra["adapter"])
        return info

    def close(self) -> None:
        from .browserhost import BrowserHostError, running_host

        session, self.session = self.session, None
        if session is not None and self.host is not None and running_host() is self.host:
            try:
                self.host.call("release", session=session, timeout=60)
            except BrowserHostError:
                pass  # the page is gone with the session
        if self._owned is not None:
            self._owned.unlink(missing_ok=True)
            self._owned = None

    def __del__(self) -> None:  # a runner dropped without close() frees its session
        try:
            if getattr(self, "session", None) is not None:
                self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def fp16_without_shader_f16(adapter: Any) -> str:
    """The words for a float16 file on a WebGPU adapter without ``shader-f16``."""
    name = adapter.get("architecture") or adapter.get("vendor") if isinstance(adapter, dict) else adapter
    return (f"the WebGPU adapter ({name or 'unnamed'}) has no {SHADER_F16} feature, so this float16 file cannot "
            "compute in float16 there (onnxruntime-web refuses it, or returns all-zero outputs without an error): "
            f"run it on an adapter with {SHADER_F16} (a real GPU), or check the float32 file on WebGPU")


def _runtime_error(settings: RunSettings, path: Path, exc: Exception, host: BrowserHost, what: str) -> OnnxFileError:
    """The error of a file onnxruntime-web cannot load or run; on WebGPU, a float16 program the adapter cannot
    run names the missing ``shader-f16`` feature."""
    words = str(exc)
    head = f"onnxruntime-web ({settings.runtime_spec}) in Chromium {what} {path.name}"
    if BACKENDS[settings.runtime_spec.name] == "webgpu" and "requires f16" in words:
        from .browserhost import BrowserHostError

        try:
            gpu = host.call("info", timeout=60)["webgpu"]  # type: ignore[index]
        except BrowserHostError:  # the reason stands without the adapter's name
            gpu = {}
        if SHADER_F16 not in (gpu.get("features") or []):
            return OnnxFileError(f"{head}: {fp16_without_shader_f16(gpu.get('info'))}. onnxruntime-web said: "
                                 f"{words.splitlines()[0][:300]}")
    return OnnxFileError(f"{head}: {words}")


def _metadata_from_file(path: Path) -> dict[str, Any]:
    """Inputs and outputs read from the file, for an onnxruntime-web without ``inputMetadata``."""
    import onnx

    from ..onnxfile.io import load_onnx_proto

    graph = load_onnx_proto(path).graph
    inits = {t.name for t in graph.initializer}

    def describe(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        kind = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "type": "bool" if kind == "bool" else kind, "shape": dims}

    return {"inputs": [describe(v) for v in graph.input if v.name not in inits],
            "outputs": [describe(v) for v in graph.output]}

"""The runners of onnxruntime-node (the native CPU build npm ships) and onnxruntime-web's WASM backend, both
in Node.js. Every runner of a Python process talks to one long-lived Node.js process (:mod:`.nodehost`).

Runtime options, as ``onnxruntime-web(numThreads=1)``: ``numThreads`` (onnxruntime-web: the WASM thread
pool, fixed when its first session starts in the host; onnxruntime-node: the intra-op threads), and
onnxruntime-js session options passed as they are (:data:`SESSION_KEYS`). The optimisation level is the
variant's ``ort_opt`` (onnxruntime-js spells the levels as this plugin does).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import OnnxFileError, SpecError
from .jsfiles import external_data, nested_config
from .runner import RunSettings, RuntimeInfo, TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .nodehost import NodeHost

#: runtime -> (host backend, npm package, backend as the report names it)
BACKENDS = {"onnxruntime-node": ("node", "onnxruntime-node", "cpu"),
            "onnxruntime-web": ("web-wasm", "onnxruntime-web", "wasm")}
#: onnxruntime-js session options a runtime option may set as they are
SESSION_KEYS = ("intraOpNumThreads", "interOpNumThreads", "executionMode", "enableMemPattern", "logSeverityLevel")
#: onnxruntime-js tensor type -> ONNX Runtime's type name, as ``NodeArg.type`` spells it
ONNX_TYPES = {"float32": "float", "float64": "double", "float16": "float16", "int8": "int8", "uint8": "uint8",
              "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64",
              "uint64": "uint64", "bool": "bool", "string": "string"}
MIN_NODE_MAJOR = 18


class NodeRunner:
    """A session in the Node.js host (``runtime`` is onnxruntime-node or onnxruntime-web)."""

    def __init__(self, settings: RunSettings, path: Path, request: dict[str, Any], owned: Path | None) -> None:
        self.settings = settings
        self.runtime = settings.runtime_spec.name
        self.path = path
        self._request = request
        self._owned = owned  # a temporary copy of bytes or a ModelProto, removed on close
        self._session: str | None = None
        self._generation = -1
        self._closed = False
        self._meta: dict[str, Any] = {}
        self._load()

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(cls, model: Any, settings: RunSettings, *, mem_arena: bool = True,
             config: Mapping[str, str] | None = None) -> "NodeRunner":
        runtime = settings.runtime_spec.name
        if runtime not in BACKENDS:
            raise SpecError(f"NodeRunner runs {', '.join(BACKENDS)}, not {runtime}")
        settings.check_level()
        reason = cls.missing(settings)
        if reason:
            from ..errors import VariantSkip

            raise VariantSkip(reason)
        request = _load_request(settings, mem_arena=mem_arena, config=config)
        owned = None
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).absolute()
            if not path.is_file():
                raise OnnxFileError(f"ONNX file not found: {path}")
        else:
            import tempfile

            data = model.SerializeToString() if hasattr(model, "SerializeToString") else bytes(model)
            fd, name = tempfile.mkstemp(prefix="onnx-parity-", suffix=".onnx")  # outlives a restarted host
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            owned = path = Path(name)
        if request["backend"] == "web-wasm" and owned is None:
            request["externalData"] = external_data(path)
        try:
            return cls(settings, path, request, owned)
        except BaseException:
            if owned is not None:
                owned.unlink(missing_ok=True)
            raise

    def _load(self) -> None:
        from .nodehost import HostRequestError, get_host

        host, self._generation = get_host()
        try:
            self._meta = host.request("load", model=str(self.path), **self._request)
        except HostRequestError as exc:
            raise OnnxFileError(self._cannot("load", exc)) from exc
        self._session = self._meta["session"]

    def _host(self) -> "NodeHost":
        """The host of this runner's session; a new host when the old one died (the file is loaded again)."""
        from .nodehost import get_host

        if self._closed:
            raise OnnxFileError(f"this {self.runtime} runner was closed: open the file again")
        host, generation = get_host()
        if generation != self._generation:
            self._load()
        return host

    def _cannot(self, what: str, exc: Exception) -> str:
        hint = ""
        if self._owned is None and what == "load":
            from ..onnxfile.cache import repair_hint

            hint = f" {repair_hint(self.path)}"
        name = "the model" if self._owned is not None else str(self.path)
        return f"{self.runtime} cannot {what} {name}: {str(exc).strip()[:800].rstrip('.')}.{hint}"

    @classmethod
    def missing(cls, settings: RunSettings) -> str | None:
        """Why this runtime cannot run here: no Node.js, or its npm package not installed (with the command)."""
        from .npm import node_missing, package_missing

        runtime = settings.runtime_spec.name
        if runtime not in BACKENDS:
            return f"NodeRunner runs {', '.join(BACKENDS)}, not {runtime}"
        return node_missing() or _node_too_old() or package_missing(BACKENDS[runtime][1], runtime)

    # -- ONNX Runtime's API ----------------------------------------------------------------------------
    def get_inputs(self) -> Sequence[TensorInfo]:
        return [_info(t) for t in self._meta["inputs"]]

    def get_outputs(self) -> Sequence[TensorInfo]:
        return [_info(t) for t in self._meta["outputs"]]

    def get_providers(self) -> list[str]:
        return [BACKENDS[self.runtime][2]]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"], *args: Any) -> list["np.ndarray"]:
        from .nodehost import HostRequestError

        host = self._host()
        files: list[Path] = []
        try:
            wire = []
            for name, array in feeds.items():
                wire.append(_write_feed(host, name, array))
                files.append(Path(wire[-1]["file"]))
            try:
                reply = host.request("run", session=self._session, feeds=wire,
                                     outputs=list(output_names) if output_names else None, dir=str(host.tmp))
            except HostRequestError as exc:
                raise OnnxFileError(self._cannot("run", exc)) from exc
            files.extend(Path(o["file"]) for o in reply["outputs"])
            return [_read_output(o) for o in reply["outputs"]]
        finally:
            for f in files:
                f.unlink(missing_ok=True)

    def info(self) -> RuntimeInfo:
        from .nodehost import get_host

        _, package, shown = BACKENDS[self.runtime]
        versions = get_host()[0].versions()
        threads = self._meta.get("numThreads") or self._request.get("options", {}).get("intraOpNumThreads") or os.cpu_count()
        extra: dict[str, Any] = {"ort_opt": self.settings.ort_opt, "runtime_options": dict(self.settings.runtime_spec.options)}
        asked = self._request.get("numThreads")
        if asked and asked != threads:  # onnxruntime-web's pool is the size its first session in the host gave it
            extra["threads_asked"] = asked
            extra["threads_note"] = ("onnxruntime-web fixes its WASM thread pool when its first session starts in the "
                                     f"Node.js process: this run's first onnxruntime-web variant made it {threads}")
        return RuntimeInfo(runtime=self.runtime, versions={"node": versions.get("node", ""), package: versions.get(package, "")},
                           backend=shown, providers=[shown], threads=int(threads), precision=None, extra=extra)

    def close(self) -> None:
        from . import nodehost

        host, session = nodehost._HOST, self._session
        self._session, self._closed = None, True
        if host is not None and session and nodehost.generation == self._generation and host.alive:
            try:
                host.request("release", session=session, timeout=30)
            except (nodehost.HostError, nodehost.HostRequestError):
                pass  # the session goes with the host
        if self._owned is not None:
            self._owned.unlink(missing_ok=True)
            self._owned = None

    def __del__(self) -> None:  # a runner dropped without close() frees its session
        try:
            if self._session is not None:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _load_request(settings: RunSettings, *, mem_arena: bool, config: Mapping[str, str] | None) -> dict[str, Any]:
    """The host's ``load`` fields of ``settings``: backend, session options, WASM threads."""
    runtime = settings.runtime_spec
    backend = BACKENDS[runtime.name][0]
    opts = dict(runtime.options)
    unknown = sorted(set(opts) - {"numThreads", *SESSION_KEYS})
    if unknown:
        raise SpecError(f"{runtime}: unknown option(s) {', '.join(unknown)}; {runtime.name} takes numThreads, "
                        f"{', '.join(SESSION_KEYS)} (the optimisation level is --onnx-parity-ort-opt)")
    threads = settings.threads or opts.pop("numThreads", None)
    options: dict[str, Any] = {"graphOptimizationLevel": settings.ort_opt, "enableCpuMemArena": bool(mem_arena), **opts}
    if config:
        options["extra"] = nested_config(config)
    request: dict[str, Any] = {"backend": backend, "options": options}
    if threads:
        if backend == "web-wasm":
            request["numThreads"] = int(threads)
        else:
            options.setdefault("intraOpNumThreads", int(threads))
    return request


def _info(t: Mapping[str, Any]) -> TensorInfo:
    dims = [d if isinstance(d, int) else (d or None) for d in t["dims"]]
    kind = ONNX_TYPES.get(t["type"], t["type"])
    return TensorInfo(name=t["name"], shape=dims, type=f"tensor({kind})" if kind != "non-tensor" else kind)


def _write_feed(host: "NodeHost", name: str, array: Any) -> dict[str, Any]:
    import numpy as np

    a = np.ascontiguousarray(array)
    dtype = "bool" if a.dtype == np.bool_ else a.dtype.name
    if dtype not in ONNX_TYPES or dtype == "string":
        raise OnnxFileError(f"input {name}: numpy dtype {a.dtype} cannot be passed to the Node.js runtimes")
    path = host.scratch(".bin")
    a.astype(a.dtype.newbyteorder("<"), copy=False).tofile(path)
    return {"name": name, "dtype": dtype, "dims": list(a.shape), "file": str(path)}


def _read_output(o: Mapping[str, Any]) -> "np.ndarray":
    import numpy as np

    dtype = np.dtype(np.bool_ if o["dtype"] == "bool" else o["dtype"]).newbyteorder("<")
    return np.fromfile(o["file"], dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape([int(d) for d in o["dims"]])


def _node_too_old() -> str | None:
    import shutil

    return _node_version_problem(shutil.which("node") or "node")


@functools.lru_cache(maxsize=4)
def _node_version_problem(node: str) -> str | None:
    import subprocess

    from .npm import install_command

    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        major = int(text.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "node on PATH does not answer `node --version`: install Node.js 20 or newer"
    if major < MIN_NODE_MAJOR:
        return f"node {text.strip()} is too old: install Node.js 20 or newer, then run `{install_command()}`"
    return None

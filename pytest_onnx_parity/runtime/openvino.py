"""The OpenVINO runner: the ``openvino`` package's runtime, on its CPU plugin by default, at the precision it
picks unless told otherwise, as a user of OpenVINO gets it.

OpenVINO reads the ONNX file itself (its ONNX frontend) and compiles it for a device. Runtime options, written
``openvino(INFERENCE_PRECISION_HINT=f32)``, are the compile configuration (:data:`OPTIONS`; ``device=`` picks the
device). On a CPU with bf16 instructions (AVX512_BF16, AMX) OpenVINO's CPU plugin runs a float32 file in bf16
unless ``INFERENCE_PRECISION_HINT=f32`` is given; :meth:`OpenVinoRunner.info` reads the precision back from the
compiled model and names the CPU feature that made bf16 the default, so a verdict can say what actually ran
(:mod:`pytest_onnx_parity.checks.runtime_precision`).

Not the onnxruntime-openvino wheel (ONNX Runtime's OpenVINOExecutionProvider): that wheel replaces the
``onnxruntime`` module, so it needs an environment of its own. ``openvino`` is imported inside the functions.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import OnnxFileError, OnnxParityError, SpecError, VariantSkip
from .runner import RunSettings, RuntimeInfo, TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

#: the compile options a runtime spec may give (OpenVINO's property names), and ``device``
OPTIONS = ("device", "INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
           "PERFORMANCE_HINT", "PERFORMANCE_HINT_NUM_REQUESTS", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING",
           "SCHEDULING_CORE_TYPE", "CPU_DENORMALS_OPTIMIZATION", "DYNAMIC_QUANTIZATION_GROUP_SIZE")
DEFAULT_DEVICE = "CPU"
#: what a user may write for INFERENCE_PRECISION_HINT -> OpenVINO's value
HINT_VALUES = {"f32": "f32", "fp32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
               "f16": "f16", "fp16": "f16", "float16": "f16"}
#: OpenVINO's element type name (read back from the compiled model) -> the report's precision
PRECISION_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16",
                   "float16": "fp16"}
#: CPU flags (runtime/environment.py) that make OpenVINO's CPU plugin default to a lower precision, best first
DEFAULT_PRECISION_FLAGS = {"bf16": ("amx_bf16", "avx512_bf16"), "fp16": ("avx512_fp16", "fphp", "asimdhp")}
#: ONNX element type of OpenVINO's element types
ONNX_TYPES = {"f32": "float", "f16": "float16", "bf16": "bfloat16", "f64": "double", "i64": "int64", "i32": "int32",
              "i16": "int16", "i8": "int8", "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
              "boolean": "bool", "string": "string"}
MISSING = "openvino is not installed: run `onnx-parity runtimes --install openvino` (pip install openvino)"
#: the ONNX Runtime session config entry that names where a serialised model's external data lives
EXT_DIR_KEY = "session.model_external_initializers_file_folder_path"


def compile_config(settings: RunSettings) -> tuple[str, dict[str, Any]]:
    """``(device, config)`` of a runtime spec: its options checked against :data:`OPTIONS`, the precision hint's
    spelling normalised, ``settings.threads`` as INFERENCE_NUM_THREADS unless the spec gives it."""
    spec = settings.runtime_spec
    device, config = DEFAULT_DEVICE, {}
    for key, value in spec.options:
        if key.lower() == "device":
            device = str(value).upper()
            continue
        name = key.upper()
        if name not in OPTIONS:
            raise SpecError(f"runtime {spec}: unknown OpenVINO option {key!r}; valid options: {', '.join(OPTIONS)} "
                            "(OpenVINO's property names, e.g. openvino(INFERENCE_PRECISION_HINT=f32))")
        if name == "INFERENCE_PRECISION_HINT":
            hint = HINT_VALUES.get(str(value).lower())
            if hint is None:
                raise SpecError(f"runtime {spec}: INFERENCE_PRECISION_HINT={value!r}: choose f32, bf16 or f16")
            value = hint
        elif name in ("EXECUTION_MODE_HINT", "PERFORMANCE_HINT", "SCHEDULING_CORE_TYPE") and isinstance(value, str):
            value = value.upper()
        config[name] = value
    if settings.threads and "INFERENCE_NUM_THREADS" not in config:
        config["INFERENCE_NUM_THREADS"] = int(settings.threads)
    return device, config


def declared_precision(settings: RunSettings) -> str | None:
    """The precision a runtime spec asks for (``"fp32"``, ``"bf16"``, ``"fp16"``), None when it asks for none."""
    for key, value in settings.runtime_spec.options:
        if key.upper() == "INFERENCE_PRECISION_HINT":
            return PRECISION_NAMES.get(HINT_VALUES.get(str(value).lower(), ""))
    return None


def _onnx_io(proto: "onnx.ModelProto") -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The file's inputs (not its initializers) and outputs, as ONNX Runtime lists them."""
    import onnx

    def info(v: Any) -> TensorInfo:
        t = v.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
                for d in t.shape.dim] if t.HasField("shape") else []
        return TensorInfo(v.name, dims, f"tensor({onnx.TensorProto.DataType.Name(t.elem_type).lower()})")

    inits = {i.name for i in proto.graph.initializer}
    return ([info(v) for v in proto.graph.input if v.name not in inits], [info(v) for v in proto.graph.output])


def _ov_io(ports: Sequence[Any]) -> list[TensorInfo]:
    """Inputs or outputs as OpenVINO sees them (when the ONNX graph cannot be read: a dynamic dimension is "?")."""
    out = []
    for p in ports:
        dims = [d.get_length() if d.is_static else "?" for d in p.get_partial_shape()]
        out.append(TensorInfo(p.get_any_name(), dims, f"tensor({ONNX_TYPES.get(p.get_element_type().get_type_name(), 'float')})"))
    return out


def _read(core: Any, model: Any, ext_dir: str | None) -> tuple[Any, "onnx.ModelProto | None", Path | None]:
    """``(ov.Model, the graph without weights or None, path)`` of a path, serialised bytes or a ModelProto. Bytes
    whose weights live beside another file (``ext_dir``) are read through a temporary file in that folder."""
    from ..onnxfile.io import load_onnx_proto

    path: Path | None = None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        proto = load_onnx_proto(path)  # a missing or unreadable file: OnnxFileError naming the fix
        return _read_path(core, path), proto, path
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else bytes(model)
    try:
        from ..onnxfile.io import load_onnx_bytes

        proto = load_onnx_bytes(data)
        inits = {i.name for i in proto.graph.initializer}
        proto.graph.ClearField("initializer")  # the names are all that is kept
        kept = [v for v in proto.graph.input if v.name not in inits]
        del proto.graph.input[:]
        proto.graph.input.extend(kept)
    except Exception:  # OpenVINO says what is wrong with it below
        proto = None
    if ext_dir is None:
        try:
            return core.read_model(data), proto, None
        except Exception as exc:
            raise _unreadable("the model", exc) from exc
    fd, tmp = tempfile.mkstemp(suffix=".onnx", prefix=".onnx-parity-", dir=ext_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return _read_path(core, Path(tmp)), proto, None
    finally:
        os.unlink(tmp)  # OpenVINO holds the graph and maps the external data files, not this one


def _read_path(core: Any, path: Path) -> Any:
    try:
        return core.read_model(str(path))
    except Exception as exc:
        raise _unreadable(str(path), exc, path) from exc


def _unreadable(what: str, exc: Exception, path: Path | None = None) -> OnnxFileError:
    hint = "Check it with onnx.checker.check_model, or re-export it"
    if path is not None:
        from ..onnxfile.cache import repair_hint

        hint = repair_hint(path)
    return OnnxFileError(f"OpenVINO cannot read {what}: {_last_line(exc)[:500]}. {hint}")


def _last_line(exc: Exception) -> str:
    """OpenVINO's own reason: the last line of its message (the lines before name its source files)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from")]
    return lines[-1] if lines else " ".join(str(exc).split())[:300]


def _output_index(names: Sequence[str], ports: Sequence[Any]) -> dict[str, int]:
    """Each ONNX output name -> the compiled model's output that carries it (an OpenVINO output may carry several
    tensor names: the ONNX frontend folds Identity nodes); by position where names are missing."""
    index: dict[str, int] = {}
    for i, port in enumerate(ports):
        for name in port.get_names():
            index.setdefault(name, i)
    missing = [n for n in names if n not in index]
    if missing and len(ports) == len(names):
        index.update({n: names.index(n) for n in missing})
    elif missing:
        raise OnnxParityError(f"OpenVINO's compiled model has no output named {', '.join(missing[:5])} "
                              f"(its outputs: {', '.join(sorted(index)[:10])})")
    return index


class OpenVinoRunner:
    """The ``openvino`` runtime: one compiled model (``.compiled``) and one infer request."""

    runtime = "openvino"

    def __init__(self, compiled: Any, settings: RunSettings, device: str, config: dict[str, Any],
                 io: tuple[list[TensorInfo], list[TensorInfo]]) -> None:
        self.compiled = compiled
        self.settings = settings
        self.device = device
        self.config = config
        self._inputs, self._outputs = io
        self._index = _output_index([o.name for o in self._outputs], compiled.outputs)
        self._fed = {n for port in compiled.inputs for n in port.get_names()}
        self._request = compiled.create_infer_request()

    @classmethod
    def open(cls, model: Any, settings: RunSettings, *, mem_arena: bool = True,
             config: Mapping[str, str] | None = None) -> "OpenVinoRunner":
        """``model`` read and compiled for the spec's device with its options; ``mem_arena`` and ONNX Runtime's
        session ``config`` do not apply (but the folder of a serialised model's external data does)."""
        device, compile_cfg = compile_config(settings)
        why = cls.missing(settings)
        if why:
            raise VariantSkip(why)
        import openvino as ov

        core = ov.Core()
        if device not in core.available_devices:
            raise VariantSkip(f"OpenVINO has no device {device} here (available: {', '.join(core.available_devices)}); "
                              "nothing was checked on it")
        try:  # the options checked by the device before the file is read
            core.set_property(device, compile_cfg)
        except Exception as exc:
            raise SpecError(f"runtime {settings.runtime_spec}: OpenVINO's {device} refused the options {compile_cfg}: "
                            f"{_last_line(exc)}; valid options: {', '.join(OPTIONS)}") from exc
        ov_model, proto, path = _read(core, model, (config or {}).get(EXT_DIR_KEY))
        try:
            compiled = core.compile_model(ov_model, device, compile_cfg)
        except Exception as exc:
            text = " ".join(str(exc).split())[:500]
            what = str(path) if path is not None else "the model"
            raise OnnxFileError(f"OpenVINO cannot compile {what} for {device}: {text}. Run it with "
                                "--onnx-parity-runtime onnxruntime to check the file itself, and report the operator "
                                "OpenVINO names to OpenVINO") from exc
        io = _onnx_io(proto) if proto is not None else (_ov_io(compiled.inputs), _ov_io(compiled.outputs))
        runner = cls(compiled, settings, device, compile_cfg, io)
        runner.path = path
        runner.meta = {p.key: p.value for p in proto.metadata_props} if proto is not None else {}
        return runner

    def metadata(self) -> dict[str, str]:
        """The file's ``metadata_props``."""
        return dict(getattr(self, "meta", {}))

    @classmethod
    def missing(cls, settings: RunSettings) -> str | None:
        """Why OpenVINO cannot run here (None when the package imports)."""
        try:
            import openvino  # noqa: F401
        except ImportError:
            return MISSING
        return None

    def get_inputs(self) -> Sequence[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> Sequence[TensorInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [str(d) for d in self.compiled.get_property("EXECUTION_DEVICES")]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, "np.ndarray"], *args: Any) -> list["np.ndarray"]:
        """The values of ``output_names`` (all the file's outputs when None), ONNX Runtime's order and names."""
        import numpy as np

        names = list(output_names) if output_names else [o.name for o in self._outputs]
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise OnnxParityError(f"the model has no output {', '.join(unknown[:5])} (its outputs: "
                                  f"{', '.join(o.name for o in self._outputs[:10])})")
        unknown = [k for k in feeds if k not in self._fed and k not in {i.name for i in self._inputs}]
        if unknown:
            raise OnnxParityError(f"the model has no input {', '.join(unknown[:5])} (its inputs: "
                                  f"{', '.join(i.name for i in self._inputs[:10])})")
        # an input no node reads (a teacher-forced value past the nodes kept) is dropped by OpenVINO: not fed
        self._request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items() if k in self._fed})
        return [np.array(self._request.get_output_tensor(self._index[n]).data, copy=True) for n in names]

    def info(self) -> RuntimeInfo:
        import importlib.metadata as md

        import openvino as ov

        prop = self.compiled.get_property
        hint_given = "INFERENCE_PRECISION_HINT" in self.config
        precision, reason = effective_precision(str(prop("INFERENCE_PRECISION_HINT")), str(prop("EXECUTION_MODE_HINT")),
                                                hint_given, self.device)
        try:
            version = md.version("openvino")
        except md.PackageNotFoundError:  # pragma: no cover - a build from source
            version = ov.get_version()
        return RuntimeInfo(runtime=self.runtime, versions={"openvino": version}, backend=self.device,
                           providers=self.get_providers(), threads=int(prop("INFERENCE_NUM_THREADS")),
                           precision=precision, precision_reason=reason,
                           extra={"device": self.device, "hint_given": hint_given,
                                  "execution_mode": str(prop("EXECUTION_MODE_HINT")).rsplit(".", 1)[-1],
                                  "openvino_build": ov.get_version(), "num_streams": str(prop("NUM_STREAMS")),
                                  "compile_config": {k: str(v) for k, v in self.config.items()}})

    def close(self) -> None:
        self._request = None
        self.compiled = None


def effective_precision(hint: str, mode: str, hint_given: bool, device: str = DEFAULT_DEVICE,
                        flags: frozenset[str] | None = None) -> tuple[str | None, str]:
    """``(precision, reason)`` from the compiled model's INFERENCE_PRECISION_HINT (``<Type: 'bfloat16'>``, ``f32``...)
    and EXECUTION_MODE_HINT: ``"fp32"``, ``"bf16"``, ``"fp16"``, or None for the file's own (ACCURACY mode);
    the reason names the option given, or the CPU feature that made a lower precision OpenVINO's default."""
    text = hint.lower().replace("<type: ", "").strip("'<> ")
    precision = PRECISION_NAMES.get(text)
    if precision is None:
        if "accuracy" in mode.lower():
            return None, "EXECUTION_MODE_HINT=ACCURACY: OpenVINO runs the file's own precision"
        return None, f"INFERENCE_PRECISION_HINT reads {text!r}: the file's own precision"
    if hint_given:
        return precision, f"INFERENCE_PRECISION_HINT was given; the compiled model reads {text}"
    if precision == "fp32":
        return precision, f"OpenVINO's {device} default here (INFERENCE_PRECISION_HINT reads {text})"
    if flags is None:
        from .environment import probe_cpu

        flags = probe_cpu()[2]
    feature = next((f for f in DEFAULT_PRECISION_FLAGS.get(precision, ()) if f in flags), None)
    why = f"this CPU has {feature}" if feature else f"this {device} supports {precision}"
    return precision, (f"OpenVINO's {device} plugin defaults to {precision} because {why} (INFERENCE_PRECISION_HINT "
                       f"was not set and reads {text}); set INFERENCE_PRECISION_HINT=f32 for float32")

"""Reproducer bundles: everything needed to rerun a failing model's check elsewhere.

``--onnx-parity-artifacts DIR`` makes the gate call :func:`write_bundle` for each
failing model. ``DIR/<model>/`` then holds:

``model.onnx``       the exported file (and its external data files, if any)
``inputs.npz``       ``input``: the random batch the gate used (float32 NCHW)
``outputs.npz``      ``torch`` and ``onnx``: the outputs of both sides on that batch, flat (N, D): the
                     logits of a classifier; an embedding; features flattened per sample and
                     concatenated in order (``bundle.json``'s ``segments`` say where each lies)
``layers.txt``       the per-layer table, or why there is none
``result.json``      the gate's result for the model (one entry of the JSON report)
``bundle.json``      what the bundle holds: model, tolerances, versions, problems
``weights.pt``       the torch state dict (when below 256 MB), for ``reproduce.py --torch``
``module.onnx``      with ``module_io.npz`` (and ``module_reduced.*``): the first divergent module's
                     subgraph alone with torch's values at its boundary (:mod:`.modulepart`)
``reproduce.py``     reruns ONNX Runtime on the inputs and compares with the stored
                     torch logits; needs only numpy and onnxruntime (plus torch and
                     timm for ``--torch``); exits 1 on a mismatch, 0 otherwise;
                     ``--module`` runs the module's subgraph alone
``ISSUE.md``         a bug report ready to paste, with who to blame (:mod:`.issue`)
``README.txt``       how to use it

A part that cannot be made (ONNX Runtime cannot load the file, the model cannot run again, ...) is
written into ``bundle.json`` and ``README.txt``; only a folder that cannot be written raises ``OSError``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import safe_name
from ..onnxfile.io import external_files

if TYPE_CHECKING:  # pragma: no cover
    from ..model.record import LoadedModel
    from .runstate import RunState

WEIGHTS_LIMIT = 256 * 2**20  # bytes of state dict written as weights.pt
ONNX_NAME = "model.onnx"
#: The reproducer, a module of this package (linted and tested as code), copied into each bundle.
REPRODUCE_SCRIPT = Path(__file__).resolve().parents[1] / "reproduce.py"
REPRODUCE_MJS = Path(__file__).resolve().parents[1] / "runtime" / "js" / "reproduce.mjs"


def write_bundle(run_state: RunState, directory: "str | os.PathLike[str]") -> Path:
    """Write the reproducer bundle of one failing gate run into ``directory/<model>/``; return that folder.

    ``run_state`` is a :class:`pytest_onnx_parity.run.ParityRun` after
    ``execute`` (``.model``, ``.export``, ``.inputs``, ``.result``). The folder
    is written in a temporary place and renamed into position, replacing an older
    bundle of the same model.
    """
    result = getattr(run_state, "result", None)
    label = str(getattr(result, "model", None) or "model")
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{safe_name(label)}-", dir=root))
    except OSError as exc:
        raise OSError(f"onnx-parity: cannot write the reproducer bundle of {label} into {root}: {exc}") from exc
    target = root / safe_name(label)
    try:
        _fill(run_state, label, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"onnx-parity: cannot write the reproducer bundle of {label} into {target}: {exc}") from exc
    return target


class _Parts:
    """What a bundle being written holds so far: its folder, the files written, the problems met."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[str] = []
        self.problems: list[str] = []

    def attempt(self, what: str, fn: Any) -> Any:
        """``fn()``, or None with the problem recorded (never raised into the gate; an OSError is: the folder failed)."""
        try:
            return fn()
        except OSError:
            raise
        except Exception as exc:
            self.problems.append(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}")
            return None


def _fill(run_state: RunState, label: str, out: Path) -> None:
    from .issue import issue_markdown
    from .modulepart import MODULE_FILES, write_module_part

    parts = _Parts(out)
    result = getattr(run_state, "result", None)
    model = getattr(run_state, "model", None)
    onnx_file = _copy_onnx(parts, getattr(run_state, "export", None))
    x = _write_inputs(parts, run_state)
    outputs, input_name, names = _write_outputs(parts, run_state, x, onnx_file)
    _write_layers(parts, result)
    module = write_module_part(run_state, out, parts.attempt)
    parts.files += [f for f in MODULE_FILES if (out / f).is_file()]
    rdict = parts.attempt("result.json", result.to_dict) if result is not None else None
    if rdict is not None:
        (out / "result.json").write_text(json.dumps(rdict, indent=2) + "\n")
        parts.files.append("result.json")
    if model is not None:  # weights for rebuilding the torch side
        saved = parts.attempt("weights.pt", lambda: _save_weights(model, out / "weights.pt"))
        if saved:
            parts.files.append("weights.pt")
        elif saved is False:
            parts.problems.append(f"weights.pt: not written, the state dict exceeds {WEIGHTS_LIMIT >> 20} MB "
                                  "(the ONNX file holds the same weights)")
    js = parts.attempt("reproduce.mjs", lambda: _js_reproducer(parts, run_state, x, outputs.get("torch")))
    meta = _meta(run_state, label, parts, outputs.get("torch"), input_name, names, onnx_file, module)
    settings = getattr(run_state, "settings", None)
    meta["runtime"] = str(settings.runtime) if settings is not None else "onnxruntime"
    meta["runtime_info"] = getattr(result, "runtime_info", None)
    if js is not None:
        meta["js"] = js
    from ..results import jsonable

    (out / "bundle.json").write_text(json.dumps(jsonable(meta), indent=2, default=str) + "\n")
    (out / "ISSUE.md").write_text(issue_markdown(meta))
    shutil.copyfile(REPRODUCE_SCRIPT, out / "reproduce.py")
    (out / "README.txt").write_text(_readme(meta))


def _copy_onnx(parts: _Parts, export: Any) -> Path | None:
    """The ONNX file, with its external data; its path in the bundle, or None."""
    onnx_src = Path(export.path) if export is not None and getattr(export, "path", None) else None
    if onnx_src is None or not onnx_src.is_file():
        parts.problems.append(f"ONNX file: not available ({onnx_src or 'the model was not exported'})")
        return None
    for data in parts.attempt("external data of the ONNX file", lambda: external_files(onnx_src)) or []:
        if data.is_file():
            shutil.copyfile(data, parts.out / data.name)
            parts.files.append(data.name)
        else:
            parts.problems.append(f"external data file missing: {data}")
    shutil.copyfile(onnx_src, parts.out / ONNX_NAME)
    parts.files.append(ONNX_NAME)
    return parts.out / ONNX_NAME


def _write_inputs(parts: _Parts, run_state: Any) -> Any:
    import numpy as np

    built, options = getattr(run_state, "built", None), getattr(run_state, "options", None)
    x = getattr(run_state, "inputs", None)
    if x is None and built is not None:
        x = parts.attempt("inputs (rebuilt: the gate did not reach the random batch)", lambda: _rebuild_inputs(built, options))
    if x is None:
        parts.problems.append("inputs: none (the gate did not reach the random batch)")
        return None
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    np.savez(parts.out / "inputs.npz", input=x)
    parts.files.append("inputs.npz")
    return x


def _write_outputs(parts: _Parts, run_state: Any, x: Any, onnx_file: Path | None) -> tuple[dict[str, Any], Any, Any]:
    """Both sides' outputs on the inputs: (outputs by side, the file's input name, its output names)."""
    import numpy as np

    model = getattr(run_state, "model", None)
    outputs: dict[str, Any] = {}
    input_name = None
    if x is not None and model is not None:
        t = parts.attempt("torch logits", lambda: _torch_logits(model, x))
        if t is not None:
            outputs["torch"] = t
    names = parts.attempt("the file's outputs", lambda: _output_names(run_state))
    if x is not None and onnx_file is not None:
        got = parts.attempt("ONNX Runtime logits",
                            lambda: _onnx_logits(onnx_file, x, names, getattr(run_state, "settings", None)))
        if got is not None:
            input_name, outputs["onnx"] = got
    if outputs:
        np.savez(parts.out / "outputs.npz", **outputs)
        parts.files.append("outputs.npz")
    return outputs, input_name, names


def _write_layers(parts: _Parts, result: Any) -> None:
    """layers.txt: the per-layer table, or why there is none."""
    cmp = getattr(result, "layer_comparison", None)
    if cmp is not None and hasattr(cmp, "table"):
        table = parts.attempt("per-layer table", cmp.table)
        text = table if isinstance(table, str) else "The per-layer table could not be drawn (see bundle.json).\n"
        summary = parts.attempt("per-layer summary", cmp.summary) if hasattr(cmp, "summary") else None
        if isinstance(summary, str):
            text = summary + "\n\n" + text
    else:
        check = result.check("layers") if result is not None and hasattr(result, "check") else None
        why = f" ({check.message})" if check is not None and check.message else ""
        text = (f"No per-layer comparison was run for this model{why}.\n"
                "Run the gate with --onnx-parity-layers always (or on-failure) to get the table here.\n")
    (parts.out / "layers.txt").write_text(text if text.endswith("\n") else text + "\n")
    parts.files.append("layers.txt")


def _meta(run_state: Any, label: str, parts: _Parts, torch_out: Any, input_name: Any, names: Any,
          onnx_file: Path | None, module: Any) -> dict[str, Any]:
    """bundle.json: what the bundle holds and what reproduce.py and ISSUE.md read."""
    from .issue import platform_info

    result, options = getattr(run_state, "result", None), getattr(run_state, "options", None)
    spec = getattr(getattr(getattr(run_state, "built", None), "record", None), "spec", None)
    arch = str(getattr(spec, "name", None) or label.split("=")[0])
    weights_kind = str(getattr(spec, "weights_kind", None) or getattr(result, "weights", "") or "")
    atol, rtol, tol_source = _tolerances(result, options, torch_out)
    logits_check = result.check("logits") if result is not None and hasattr(result, "check") else None
    segments = (getattr(logits_check, "details", None) or {}).get("outputs") or []
    failing = [f"{c.name} ({c.status})" for c in getattr(result, "checks", []) if c.status in ("failed", "error")]
    return {
        "model": label, "architecture": arch, "weights": weights_kind or None,
        "seed": getattr(options, "seed", None), "exporter": getattr(result, "exporter", None),
        "opset": getattr(result, "opset", None), "status": getattr(result, "status", None),
        "failing_checks": failing, "atol": atol, "rtol": rtol, "tolerance": tol_source,
        "default_tolerance": _default_tolerances(),
        "input_name": input_name, "onnx_file": ONNX_NAME if onnx_file else None,
        "output_kind": getattr(result, "output_kind", None), "output_names": names,
        "model_args": dict(getattr(spec, "kwargs", None) or {}),
        # features: each output's columns of the flat outputs and its own tolerance, as the logits check used them
        "segments": [{k: p.get(k) for k in ("output", "offset", "size", "atol", "rtol")} for p in segments
                     if len(segments) > 1],
        "files": sorted(parts.files + ["bundle.json", "reproduce.py", "README.txt", "ISSUE.md"]),
        "versions": _versions(), "platform": platform_info(), "module": module, "problems": parts.problems,
    }


def _rebuild_inputs(built: "LoadedModel", options: Any) -> Any:
    from ..runtime.forward import DEFAULT_BATCH, random_batch

    return random_batch(built.record.data_config, int(getattr(options, "batch_size", DEFAULT_BATCH)), int(getattr(options, "seed", 0)))


def _torch_logits(model: Any, x: Any) -> Any:
    from ..runtime.forward import torch_forward

    return torch_forward(model, x)


def _output_names(run_state: Any) -> list[str] | None:
    """The file's outputs the run compared, in the model's order (None: the file's first)."""
    if getattr(run_state, "export", None) is None or not hasattr(run_state, "session"):
        return None
    from ..runtime.forward import chosen_outputs

    return chosen_outputs(run_state.session())


def _onnx_logits(path: Path, x: Any, names: list[str] | None = None, settings: Any = None) -> tuple[str, Any]:
    """The file's outputs on ``x`` on the run's runtime (``settings``; Python onnxruntime on the CPU when None)."""
    import numpy as np

    from ..runtime.outputs import flatten
    from ..runtime.runner import RunSettings, open_runner
    from ..runtime.values import run_feeds

    runner = open_runner(path, settings or RunSettings())
    try:
        name = runner.get_inputs()[0].name
        outs = run_feeds(runner, names or None, {name: x})
    finally:
        runner.close()
    return name, np.asarray(flatten([np.asarray(o) for o in outs]) if names else outs[0])


def _js_reproducer(parts: _Parts, run_state: Any, x: Any, torch_out: Any) -> dict[str, Any] | None:
    """A failure on a JavaScript runtime also gets reproduce.mjs (Node.js, the runtime's npm package) with the
    inputs and torch's outputs as raw float32 files it reads; its settings for bundle.json."""
    import numpy as np

    from ..axes import JS_RUNTIMES

    settings = getattr(run_state, "settings", None)
    if settings is None or settings.runtime_spec.name not in JS_RUNTIMES or x is None or torch_out is None:
        return None
    np.ascontiguousarray(x, dtype="<f4").tofile(parts.out / "inputs.f32")
    np.ascontiguousarray(torch_out, dtype="<f4").tofile(parts.out / "torch.f32")
    shutil.copyfile(REPRODUCE_MJS, parts.out / "reproduce.mjs")
    parts.files += ["inputs.f32", "torch.f32", "reproduce.mjs"]
    name = settings.runtime_spec.name
    return {"package": "onnxruntime-node" if name == "onnxruntime-node" else "onnxruntime-web",
            "runtime": str(settings.runtime), "input_file": "inputs.f32", "input_shape": list(np.shape(x)),
            "torch_file": "torch.f32", "numThreads": settings.runtime_spec.opts.get("numThreads", 1),
            "graphOptimizationLevel": settings.ort_opt}


def _save_weights(model: Any, path: Path) -> bool:
    import torch

    sd = model.state_dict()
    size = sum(t.numel() * t.element_size() for t in sd.values() if hasattr(t, "numel"))
    if size > WEIGHTS_LIMIT:
        return False
    torch.save(sd, str(path))
    return True


def _tolerances(result: Any, options: Any, torch_logits: Any) -> tuple[float | None, float | None, str]:
    """The logits tolerance of the bundle: the gate's own figures, else the library's rule."""
    from ..tolerances import logits_tolerance

    check = result.check("logits") if result is not None and hasattr(result, "check") else None
    details = getattr(check, "details", None) or {}
    if details.get("atol") is not None and details.get("rtol") is not None:
        return float(details["atol"]), float(details["rtol"]), "as used by the gate's logits check"
    if torch_logits is not None:
        try:
            t = logits_tolerance(torch_logits, getattr(options, "atol", None), getattr(options, "rtol", None))
            return t.atol, t.rtol, t.source
        except Exception:  # noqa: BLE001 - reproduce.py then applies default_tolerance from bundle.json
            pass
    return None, None, "the library's default for the stored logits' dtype (default_tolerance)"


def _default_tolerances() -> dict[str, dict[str, float]]:
    """dtype -> the library's default logits tolerance, for reproduce.py (it has none of its own)."""
    from ..tolerances import DEFAULT_TOLERANCES

    return {dt: {"rtol": rt, "atol_factor": f} for dt, (rt, f) in DEFAULT_TOLERANCES.items()}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    from ..runtime.environment import library_versions

    out = library_versions()
    try:
        out["numpy"] = md.version("numpy")
    except md.PackageNotFoundError:
        out["numpy"] = "missing"
    return out


def _readme(meta: dict[str, Any]) -> str:
    lines = [
        f"Reproducer bundle of {meta['model']} (pytest-onnx-parity)",
        "",
        f"The gate found: {', '.join(meta['failing_checks']) or meta['status']}.",
        "",
        "Rerun the logits comparison (needs numpy and onnxruntime only):",
        "    python reproduce.py",
        "Also rebuild the torch side from weights.pt (needs torch and timm):",
        "    python reproduce.py --torch",
        "Exit code 1: ONNX Runtime disagrees with torch beyond the tolerance; 0: they agree.",
        *(["Run the divergent module's subgraph alone (module.onnx, torch's values in module_io.npz):",
           "    python reproduce.py --module"] if (meta.get("module") or {}).get("file") else []),
        *(["Its smallest node range that still diverges:", "    python reproduce.py --module --reduced"]
          if (meta.get("module") or {}).get("reduced") else []),
        *([f"{meta['module']['blame']['line']}", "ISSUE.md is a bug report ready to paste."]
          if (meta.get("module") or {}).get("blame") else []),
        "",
        "Files: " + ", ".join(meta["files"]),
        f"Made with: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
    ]
    if meta["problems"]:
        lines += ["", "Parts that could not be made:"] + [f"  - {p}" for p in meta["problems"]]
    return "\n".join(lines) + "\n"

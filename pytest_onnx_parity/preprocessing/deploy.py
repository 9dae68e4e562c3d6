"""The deployment's own preprocessing (``--onnx-parity-preprocess SPEC``): run it, read its tensors.

SPEC is one of

``module:function`` or ``path/to/file.py:function``
    a Python callable ``function(paths, data_config) -> array``: float32 (float64 and float16 are cast),
    ``N,3,H,W`` or ``N,H,W,3`` (the layout is read from the shape and said in the report).
``command:CMD``
    any program; ``{images}`` in CMD becomes a text file with one image path a line, ``{output}`` the
    ``.npy`` file it must write, ``{config}`` (optional) a JSON file with the data config. Run once per
    batch through the shell, in the root directory; its stderr is shown when it fails.
``tensors:DIR``
    tensors the deployment saved: one ``.npy`` per photo named by the photo's stem (``cat.jpg`` ->
    ``DIR/cat.npy``), ``3,H,W``, ``H,W,3`` or with a batch axis of 1.
``canvas`` or ``canvas(key=value, ...)``
    a browser's canvas ``drawImage`` in headless Chromium (:mod:`.canvas`).
``metadata``
    no deployment preprocessing of its own (the default): the ``preprocessing`` check is skipped.

A bad SPEC is a :class:`~..errors.SpecError` (before anything runs); a preprocessor that fails or gives
a wrong array is a :class:`~..errors.PreprocessError` naming the fix. No torch here.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PreprocessError, SpecError

__all__ = ["PreprocessSpec", "Preprocessor", "as_nchw", "open_preprocessor", "parse_preprocess"]

KINDS = ("metadata", "module", "command", "tensors", "canvas")
_USAGE = ("--onnx-parity-preprocess takes module:function, path/to/file.py:function, command:CMD (with {images} "
          "and {output}), tensors:DIR, canvas[(key=value,...)] or metadata")
_CANVAS = re.compile(r"canvas(?:\((?P<opts>[^()]*)\))?")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class PreprocessSpec:
    """A parsed SPEC: ``kind`` (one of :data:`KINDS`), ``target`` (module or file, command, folder) and
    ``function`` (module kind) or ``options`` (canvas)."""

    kind: str
    target: str = ""
    function: str = ""
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_preprocess(text: str) -> PreprocessSpec:
    """Parse SPEC; a :class:`SpecError` naming the accepted forms for anything else."""
    raw = (text or "").strip()
    if raw in ("", "metadata", "none"):
        return PreprocessSpec("metadata", text=raw or "metadata")
    m = _CANVAS.fullmatch(raw)
    if m:
        return PreprocessSpec("canvas", options=_canvas_options(m.group("opts") or "", raw), text=raw)
    if raw.startswith("command:"):
        cmd = raw[len("command:"):].strip()
        missing = [k for k in ("{images}", "{output}") if k not in cmd]
        if not cmd or missing:
            need = " and ".join(missing or ["{images}", "{output}"])
            raise SpecError(f"--onnx-parity-preprocess {raw!r}: the command must contain {need}: {{images}} becomes a "
                            "file listing the photos, one path a line, {output} the .npy file the command writes "
                            "(float32, N,3,H,W or N,H,W,3). Example: command:python3 prep.py {images} {output}")
        return PreprocessSpec("command", target=cmd, text=raw)
    if raw.startswith("tensors:"):
        folder = raw[len("tensors:"):].strip()
        if not folder:
            raise SpecError(f"--onnx-parity-preprocess {raw!r}: name the folder: tensors:DIR ({_USAGE})")
        return PreprocessSpec("tensors", target=folder, text=raw)
    target, sep, function = raw.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise SpecError(f"--onnx-parity-preprocess {raw!r}: not a preprocessor. {_USAGE}.")
    if not (target.endswith(".py") or _DOTTED.fullmatch(target)):
        raise SpecError(f"--onnx-parity-preprocess {raw!r}: {target!r} is neither a dotted module name nor a .py "
                        f"file. {_USAGE}.")
    return PreprocessSpec("module", target=target, function=function, text=raw)


def _canvas_options(text: str, raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise SpecError(f"--onnx-parity-preprocess {raw!r}: canvas options are key=value pairs, e.g. "
                            "canvas(colorSpaceConversion=none,crop=center)")
        out[key.strip()] = value.strip()
    return out


class Preprocessor:
    """A deployment's preprocessing: ``pre(paths, data_config)`` -> float32 N,C,H,W.

    ``layout_seen`` is the layout of the last array it produced (``"NCHW"`` or ``"NHWC"``), ``name`` the
    SPEC as given."""

    def __init__(self, spec: PreprocessSpec, produce: Callable[[list[Path], dict[str, Any]], Any]) -> None:
        self.spec, self._produce = spec, produce
        self.name = spec.text
        self.layout_seen: str | None = None

    def describe(self) -> str:
        kind = {"module": "the Python function", "command": "the command", "tensors": "the saved tensors in",
                "canvas": "a canvas drawImage in headless Chromium", "metadata": "no deployment preprocessing"}
        detail = {"module": f"{self.spec.target}:{self.spec.function}", "command": self.spec.target,
                  "tensors": self.spec.target, "canvas": str(self.spec.options or ""), "metadata": ""}
        return f"{kind[self.spec.kind]} {detail[self.spec.kind]}".strip()

    def __call__(self, paths: Sequence[Path], data_config: Mapping[str, Any]) -> np.ndarray:
        paths = [Path(p) for p in paths]
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(data_config).items()}
        out = self._produce(paths, cfg)
        array, layout = as_nchw(out, len(paths), int(cfg.get("input_size", (3,))[0]), cfg, who=self.describe())
        self.layout_seen = layout
        return array


def as_nchw(value: Any, n: int, channels: int, config: Mapping[str, Any] | None = None,
            who: str = "your preprocessing") -> tuple[np.ndarray, str]:
    """``(float32 N,C,H,W array, layout seen)``; a :class:`PreprocessError` naming the fix for anything else.

    A size other than the data config's is returned as it is (the comparison reports it as a size finding)."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any object a user function may return
        raise PreprocessError(f"{who} returned a {type(value).__name__}, not an array ({exc}): return a numpy "
                              "array of float32, N,3,H,W or N,H,W,3") from None
    size = tuple((config or {}).get("input_size", ()))
    expect = f"({n}, {channels}, {size[1]}, {size[2]})" if len(size) == 3 else f"({n}, {channels}, H, W)"
    if array.dtype.kind in "iub":
        raise PreprocessError(f"{who} returned {array.dtype} values: the ONNX file takes float32 normalised input. "
                              "Scale to 0..1 (divide by 255) and normalise with the data config's mean and std, "
                              f"then return float32 of shape {expect}")
    if array.dtype.kind != "f":
        raise PreprocessError(f"{who} returned dtype {array.dtype}: return float32 of shape {expect}")
    if array.ndim == 3 and n == 1:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != n:
        raise PreprocessError(f"{who} returned shape {tuple(array.shape)} for {n} photo(s): return one tensor per "
                              f"photo, in the order given, shape {expect} (or N,H,W,C)")
    if array.shape[1] == channels:
        layout = "NCHW"
    elif array.shape[3] == channels:
        layout, array = "NHWC", array.transpose(0, 3, 1, 2)
    else:
        raise PreprocessError(f"{who} returned shape {tuple(array.shape)}: neither axis 1 (NCHW) nor axis 3 (NHWC) "
                              f"holds the model's {channels} channels; return shape {expect}")
    if not np.isfinite(array).all():
        raise PreprocessError(f"{who} returned NaN or Inf values: check its normalisation (a std of 0?)")
    return np.ascontiguousarray(array, dtype=np.float32), layout


def open_preprocessor(spec_text: str, *, rootdir: str | Path | None = None,
                      timeout_s: float | None = None) -> Preprocessor:
    """The preprocessor SPEC names, its module imported now (so a bad one fails before anything runs)."""
    spec = parse_preprocess(spec_text)
    root = Path(rootdir) if rootdir is not None else Path.cwd()
    if spec.kind == "module":
        return Preprocessor(spec, _import_function(spec, root))
    if spec.kind == "command":
        from ..tolerances import PREPROCESS_COMMAND_TIMEOUT_S

        timeout = PREPROCESS_COMMAND_TIMEOUT_S if timeout_s is None else timeout_s
        return Preprocessor(spec, lambda paths, cfg: _run_command(spec.target, paths, cfg, root, timeout))
    if spec.kind == "tensors":
        folder = Path(spec.target) if Path(spec.target).is_absolute() else root / spec.target
        if not folder.is_dir():
            raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: {folder} is not a folder. Save one .npy per "
                            "photo there, named by the photo's stem (cat.jpg -> cat.npy).")
        return Preprocessor(spec, lambda paths, cfg: _load_tensors(folder, paths))
    if spec.kind == "canvas":
        return Preprocessor(spec, _canvas(spec))
    raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: no deployment preprocessing to run (metadata)")


def _import_function(spec: PreprocessSpec, root: Path) -> Callable[..., Any]:
    target = spec.target
    try:
        if target.endswith(".py"):
            path = Path(target) if Path(target).is_absolute() else root / target
            if not path.is_file():
                raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: no file {path}. Give the path of the "
                                "Python file, relative to the root directory, or a dotted module name.")
            mod_spec = importlib.util.spec_from_file_location(f"_onnx_parity_preprocess_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
            mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            module = importlib.import_module(target)
    except SpecError:
        raise
    except ModuleNotFoundError as exc:
        raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: no module {exc.name!r} ({exc}). Install it, or "
                        "run from the folder that holds it, or give path/to/file.py:function.") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: importing {target} failed: "
                        f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, spec.function, None)
    if not callable(func):
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: {target} has no function {spec.function!r}"
                        f" (its functions: {', '.join(names[:12]) or 'none'}).")

    def produce(paths: list[Path], cfg: dict[str, Any]) -> Any:
        try:
            return func(paths, cfg)
        except Exception as exc:
            raise PreprocessError(f"{target}:{spec.function}(paths, data_config) raised {type(exc).__name__}: {exc}. "
                                  "It is called with a list of pathlib.Path and the data-config dict.") from exc

    return produce


def _run_command(cmd: str, paths: list[Path], cfg: dict[str, Any], root: Path, timeout: float) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="onnx-parity-preprocess-") as tmp:
        images, output, config = Path(tmp) / "images.txt", Path(tmp) / "output.npy", Path(tmp) / "config.json"
        images.write_text("".join(f"{p.resolve()}\n" for p in paths), encoding="utf-8")
        config.write_text(json.dumps(cfg), encoding="utf-8")
        line = (cmd.replace("{images}", shlex.quote(str(images))).replace("{output}", shlex.quote(str(output)))
                .replace("{config}", shlex.quote(str(config))))
        try:
            proc = subprocess.run(line, shell=True, cwd=root, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise PreprocessError(f"the preprocessing command {cmd!r} ran past {timeout:g} s on {len(paths)} photo(s) "
                                  "and was stopped") from None
        if proc.returncode != 0:
            raise PreprocessError(f"the preprocessing command {cmd!r} failed (exit status {proc.returncode}); its "
                                  f"stderr:\n{_tail(proc.stderr) or '(empty)'}")
        if not output.is_file():
            raise PreprocessError(f"the preprocessing command {cmd!r} exited 0 but wrote no {{output}} file: it must "
                                  f"save a .npy array (numpy.save) to the path given for {{output}}. Its stderr:\n"
                                  f"{_tail(proc.stderr) or '(empty)'}")
        try:
            return np.load(output, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PreprocessError(f"the preprocessing command {cmd!r} wrote an {{output}} that is not a .npy array "
                                  f"({exc}): write it with numpy.save or the .npy format (version 1.0)") from None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _load_tensors(folder: Path, paths: list[Path]) -> np.ndarray:
    missing = [f"{p.name} -> {folder / (p.stem + '.npy')}" for p in paths if not (folder / f"{p.stem}.npy").is_file()]
    if missing:
        raise PreprocessError(f"tensors:{folder}: no saved tensor for {len(missing)} photo(s): " + "; ".join(missing)
                              + ". Save one .npy per photo, named by the photo's stem.")
    arrays = []
    for p in paths:
        try:
            a = np.load(folder / f"{p.stem}.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PreprocessError(f"{folder / (p.stem + '.npy')}: not a .npy array ({exc})") from None
        arrays.append(a[0] if a.ndim == 4 and a.shape[0] == 1 else a)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise PreprocessError(f"tensors:{folder}: the saved tensors have different shapes {sorted(shapes)}: save "
                              "each photo's model input, 3,H,W or H,W,3, all of the data config's size")
    return np.stack(arrays)


def _canvas(spec: PreprocessSpec) -> Callable[[list[Path], dict[str, Any]], Any]:
    try:
        canvas = importlib.import_module(f"{__package__}.canvas")
    except ImportError as exc:
        raise SpecError(f"--onnx-parity-preprocess {spec.text!r}: the canvas preprocessor is not available in this "
                        f"installation ({exc})") from None
    validate = getattr(canvas, "canvas_options", None)
    if validate is not None:
        validate(dict(spec.options))  # a SpecError naming the choices, before anything runs
    return lambda paths, cfg: canvas.canvas_preprocess(paths, cfg, dict(spec.options))

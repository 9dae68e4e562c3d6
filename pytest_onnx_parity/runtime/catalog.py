"""The runtimes a file can be checked on (``--onnx-parity-runtime``): whether each is ready here and why
not, and installing what each needs (``onnx-parity runtimes [--install NAME...]``).

The JavaScript runtimes need Node.js and the pinned npm packages (:mod:`.npm`); the browser ones also a
Chromium (on PATH, or the system package ``chromium``); OpenVINO its pip package. Python onnxruntime is a
dependency of the plugin.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterable

from ..axes import JS_RUNTIMES, RUNTIMES
from ..errors import OnnxParityError, SpecError

#: the runtimes that run in headless Chromium
BROWSER_RUNTIMES = ("onnxruntime-web-browser", "onnxruntime-web-webgpu")
#: Chromium's names on PATH, the system package that installs it
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_PACKAGE = "chromium"
PIP_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
INSTALL_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class RuntimeStatus:
    """One runtime here: ``reason`` is why it cannot run (naming the command that installs it), "" when ready."""

    name: str
    reason: str = ""

    @property
    def ready(self) -> bool:
        return not self.reason


def runtime_status(name: str) -> RuntimeStatus:
    """Whether runtime ``name`` can run here, asking its runner (a runner module not in this build says so)."""
    from .runner import RUNNERS, RunSettings, runtime_missing

    if name not in RUNTIMES:
        raise SpecError(f"unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}")
    module = RUNNERS[name].partition(":")[0]
    try:
        reason = runtime_missing(RunSettings(runtime=name))
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return RuntimeStatus(name, "not available: module missing (this build of the plugin has no runner for it)")
        return RuntimeStatus(name, f"not available: {exc}")
    except (ImportError, AttributeError, OnnxParityError) as exc:
        return RuntimeStatus(name, f"not available: {exc}")
    return RuntimeStatus(name, reason or "")


def catalog(names: Iterable[str] | None = None) -> list[RuntimeStatus]:
    """The status of ``names`` (all of :data:`~..axes.RUNTIMES` by default), in that order."""
    return [runtime_status(n) for n in expand(names)]


def expand(names: Iterable[str] | None) -> list[str]:
    """``names`` checked against :data:`~..axes.RUNTIMES`, ``all`` (or nothing) meaning every runtime."""
    out: list[str] = []
    for n in names or ("all",):
        for one in (RUNTIMES if n == "all" else (n,)):
            if one not in RUNTIMES:
                raise SpecError(f"unknown runtime {one!r}: choose one of {', '.join(RUNTIMES)}, or all")
            if one not in out:
                out.append(one)
    return out


def install(names: Iterable[str], *, log=print) -> list[RuntimeStatus]:  # noqa: ANN001 - a print-like callable
    """Install what ``names`` need (``all``: every runtime); returns each runtime's status afterwards.
    A step that fails is logged with its reason and the status says what is still missing."""
    wanted = expand(names)
    steps: list[tuple[str, object]] = []
    if any(n in JS_RUNTIMES for n in wanted):
        steps.append(("npm packages", _install_npm))
    if any(n in BROWSER_RUNTIMES for n in wanted):
        steps.append(("Chromium", ensure_chromium))
    steps.extend((f"pip package {PIP_PACKAGES[n]}", _pip(PIP_PACKAGES[n])) for n in wanted
                 if n in PIP_PACKAGES and not runtime_status(n).ready)
    for what, step in steps:
        try:
            done = step()  # type: ignore[operator]
            log(f"{what}: {done}")
        except OnnxParityError as exc:
            log(f"{what}: FAILED: {exc}")
    return catalog(wanted)


class InstallError(OnnxParityError):
    """An install step failed; the message names the command that failed and its own words."""


def _install_npm() -> str:
    from .npm import install_npm, node_missing, pinned_versions

    reason = node_missing()
    if reason:
        raise InstallError(reason)
    target = install_npm(quiet=True)
    pins = ", ".join(f"{p} {v}" for p, v in pinned_versions().items())
    return f"{pins} in {target}"


def chromium_path() -> str | None:
    """Chromium as the browser runtimes find it (``$ONNX_PARITY_CHROMIUM``, else on PATH), None when there is none."""
    try:
        from .browserhost import chromium_path as browser_chromium
    except ImportError:  # a build without the browser runtimes: the same rule, on the common names
        given = os.environ.get("ONNX_PARITY_CHROMIUM")
        if given:
            return given if os.path.isfile(given) else None
        return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    return browser_chromium()


def ensure_chromium() -> str:
    """Chromium found on PATH, else installed as the system package (as root, with apt-get)."""
    found = chromium_path()
    if found:
        return f"found {found}"
    command = ["apt-get", "install", "-y", CHROMIUM_PACKAGE]
    if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise InstallError(f"no Chromium on PATH: run `sudo {' '.join(command)}` (or put a Chromium on PATH, or set "
                           "ONNX_PARITY_CHROMIUM to its path)")
    _call(command, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = chromium_path()
    if not found:
        raise InstallError(f"`{' '.join(command)}` finished but no {' or '.join(CHROMIUM_NAMES)} is on PATH")
    return f"installed {found}"


def _pip(package: str):  # noqa: ANN202 - a step
    def step() -> str:
        _call([sys.executable, "-m", "pip", "install", package])
        return f"installed with {os.path.basename(sys.executable)} -m pip install {package}"

    return step


def _call(command: list[str], env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"`{' '.join(command)}` could not run: {exc}") from exc
    if done.returncode != 0:
        words = (done.stderr or done.stdout).strip()[-1200:]
        raise InstallError(f"`{' '.join(command)}` failed (exit {done.returncode}): {words}")


def table(statuses: list[RuntimeStatus]) -> str:
    """The listing ``onnx-parity runtimes`` prints: one line per runtime, ready or why not."""
    width = max(len(s.name) for s in statuses) if statuses else 0
    lines = [f"{'runtime':<{width}}  ready  why not"]
    lines += [f"{s.name:<{width}}  {'yes' if s.ready else 'no':<5}  {s.reason}".rstrip() for s in statuses]
    return "\n".join(lines)

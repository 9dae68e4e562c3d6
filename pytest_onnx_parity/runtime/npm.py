"""The npm packages of the JavaScript runtimes: where they live, whether they are installed, installing them.

The package ships ``runtime/js/package.json`` and its ``package-lock.json`` (exact versions). They are
installed into the plugin's cache, ``$ONNX_PARITY_HOME/npm`` (default ``~/.cache/pytest-onnx-parity/npm``),
by ``npm ci`` with ``ONNXRUNTIME_NODE_INSTALL=skip``: onnxruntime-node's install script would download GPU
binaries (and fails offline); skipping it keeps the CPU build its npm package bundles. After that nothing is
downloaded: the runtimes run offline.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import OnnxParityError

#: the shipped package.json, package-lock.json and the Node.js host
JS_DIR = Path(__file__).with_name("js")
#: environment of every npm call: onnxruntime-node's install script keeps its bundled CPU build
NPM_ENV = {"ONNXRUNTIME_NODE_INSTALL": "skip"}
INSTALL_TIMEOUT_S = 900.0


class NpmInstallError(OnnxParityError):
    """``npm ci`` failed or npm is missing; the message carries npm's own words and the fix."""


def install_command(*names: str) -> str:
    """The command a skip reason names: ``onnx-parity runtimes --install NAME...``."""
    return "onnx-parity runtimes --install " + " ".join(names or ("all",))


def home_dir() -> Path:
    """``$ONNX_PARITY_HOME``, else the plugin's cache directory (``$XDG_CACHE_HOME/pytest-onnx-parity``)."""
    if os.environ.get("ONNX_PARITY_HOME"):
        return Path(os.environ["ONNX_PARITY_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-onnx-parity"


def npm_dir() -> Path:
    """Where the npm packages are installed (its ``node_modules``)."""
    return home_dir() / "npm"


def pinned_versions() -> dict[str, str]:
    """package -> the exact version the shipped package.json pins."""
    return dict(json.loads((JS_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"])


def package_dir(package: str) -> Path:
    return npm_dir() / "node_modules" / package


def installed_version(package: str) -> str | None:
    """The version of ``package`` installed in :func:`npm_dir`, None when it is not there."""
    try:
        meta = json.loads((package_dir(package) / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(meta.get("version") or "") or None


def package_missing(package: str, runtime: str) -> str | None:
    """Why ``package`` cannot be used (not installed, or another version than the pinned one), naming
    the command that installs it; None when the pinned version is installed."""
    want = pinned_versions().get(package)
    got = installed_version(package)
    if got is None:
        return (f"{runtime} is not installed here ({package} {want} not found under {npm_dir()}): "
                f"run `{install_command(runtime)}`")
    if want and got != want:
        return (f"{runtime}: {package} {got} is installed under {npm_dir()}, this plugin pins {want}: "
                f"run `{install_command(runtime)}`")
    return None


def node_missing() -> str | None:
    """Why Node.js cannot run here; None when ``node`` is on PATH."""
    if shutil.which("node") is None:
        return ("node not on PATH: install Node.js 20 or newer (e.g. `apt-get install nodejs npm`, or from nodejs.org), "
                "then run `" + install_command() + "`")
    return None


def install_npm(*, quiet: bool = False) -> Path:
    """``npm ci`` of the shipped lock file into :func:`npm_dir` with ``ONNXRUNTIME_NODE_INSTALL=skip``;
    returns that directory. Nothing is done when the pinned versions are already there."""
    target = npm_dir()
    if all(installed_version(p) == v for p, v in pinned_versions().items()) and _lock_is_current(target):
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise NpmInstallError("npm not on PATH: install Node.js 20 or newer with npm (e.g. `apt-get install nodejs npm`)")
    target.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target / ".install.lock"), timeout=INSTALL_TIMEOUT_S):
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(JS_DIR / name, target / name)
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(cmd, cwd=target, env={**os.environ, **NPM_ENV}, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise NpmInstallError(f"`npm ci` in {target} took over {INSTALL_TIMEOUT_S:.0f} s: check the npm registry "
                                  "can be reached (npm config get registry)") from exc
        if done.returncode != 0:
            words = (done.stderr or done.stdout).strip()[-1500:]
            raise NpmInstallError(f"`npm ci` in {target} failed (exit {done.returncode}): {words}\nThe npm registry must be "
                                  "reachable once (or an npm cache or mirror configured with `npm config set registry`)")
        if not quiet and done.stdout.strip():
            print(done.stdout.strip())
    return target


def _lock_is_current(target: Path) -> bool:
    try:
        return (target / "package-lock.json").read_bytes() == (JS_DIR / "package-lock.json").read_bytes()
    except OSError:
        return False

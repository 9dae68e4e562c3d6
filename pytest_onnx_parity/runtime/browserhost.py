"""The one headless Chromium of a Python process: a Node.js process running ``js/browser-host.mjs``, which
launches Chromium with puppeteer-core, opens a page on a server it runs on 127.0.0.1 and answers one JSON
command per line. Started on first use, shared by every browser runner and the canvas preprocessor, restarted
when it died, stopped at exit.

Tensors and images never travel as JSON: feeds are written to files the host serves to the page, outputs come
back as files of raw bytes (:meth:`BrowserHost.read_output`).
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import OnnxParityError, VariantSkip

#: the Node.js script, beside the page it serves
HOST_SCRIPT = Path(__file__).with_name("js") / "browser-host.mjs"
#: the runtime name whose install command a missing Chromium or npm package names
INSTALL_NAME = "onnxruntime-web-browser"
#: where Chromium is looked for when ONNX_PARITY_CHROMIUM is not set
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: seconds for Node.js to launch Chromium and answer its first line
START_TIMEOUT_S = 120.0
#: seconds one command may take in the page (a WebGPU run on a software adapter is slow); the host answers first
COMMAND_TIMEOUT_S = 600.0
#: the npm packages the browser runtimes need
PACKAGES = ("onnxruntime-web", "puppeteer-core")


class BrowserHostError(OnnxParityError):
    """The Node.js host or its Chromium failed; the message carries their words."""


def chromium_path() -> str | None:
    """``$ONNX_PARITY_CHROMIUM``, else the first Chromium or Chrome on PATH."""
    env = os.environ.get("ONNX_PARITY_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_hint() -> str:
    from .npm import install_command

    return f"run `{install_command(INSTALL_NAME)}`"


def browser_missing() -> str | None:
    """Why the browser runtimes cannot run here (no Node.js, no Chromium, npm packages missing), naming the
    fix; None when they can."""
    from .npm import node_missing, package_missing

    why = node_missing()
    if why:
        return why
    if chromium_path() is None:
        return (f"Chromium is not installed: {install_hint()} (apt-get install chromium), or set ONNX_PARITY_CHROMIUM "
                "to a Chromium or Chrome executable")
    for package in PACKAGES:
        why = package_missing(package, INSTALL_NAME)
        if why:
            return why
    return None


class BrowserHost:
    """One Node.js process and its Chromium; :meth:`call` sends a command and waits for its answer."""

    def __init__(self) -> None:
        from .npm import npm_dir

        why = browser_missing()
        if why:
            raise VariantSkip(why)
        self.tmp = Path(tempfile.mkdtemp(prefix="onnx-parity-browser-"))
        self.out_dir = self.tmp / "out"
        self.out_dir.mkdir()
        env = {**os.environ, "ONNX_PARITY_NPM_DIR": str(npm_dir()), "ONNX_PARITY_CHROMIUM": str(chromium_path()),
               "ONNX_PARITY_OUT_DIR": str(self.out_dir), "ONNX_PARITY_PROFILE_DIR": str(self.tmp / "profile")}
        self.proc = subprocess.Popen(["node", str(HOST_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env, bufsize=1)
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=40)
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.hello = self._wait(0, START_TIMEOUT_S, "starting Chromium")
        self.files = itertools.count()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.replies.put(json.loads(line))
            except ValueError:
                self.stderr.append(line.rstrip())
        self.replies.put(None)  # the process ended

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _wait(self, wanted: int, timeout: float, what: str) -> dict[str, Any]:
        while True:
            try:
                msg = self.replies.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise BrowserHostError(f"{what}: no answer from the Chromium host in {timeout:.0f} s (stopped it; the "
                                       f"next use starts a fresh one). {self._tail()}") from None
            if msg is None:
                raise BrowserHostError(f"{what}: the Chromium host exited (code {self.proc.wait()}). {self._tail()}")
            if msg.get("id") != wanted:
                continue  # the late answer of a command that timed out here
            if not msg.get("ok"):
                log = "; ".join(msg.get("log") or [])
                raise BrowserHostError(f"{what}: {msg.get('error')}" + (f" (page log: {log})" if log else ""))
            return msg.get("result") or {}

    def _tail(self) -> str:
        lines = [line for line in self.stderr if line.strip()][-8:]
        return ("Its last words: " + " | ".join(lines)) if lines else ""

    def call(self, cmd: str, *, timeout: float = COMMAND_TIMEOUT_S, **args: Any) -> dict[str, Any] | list[Any]:
        """Send ``cmd`` with ``args``; the host gives up after ``timeout`` seconds (and drops the page), this
        side a minute later (and stops the host)."""
        with self.lock:
            if not self.alive():
                raise BrowserHostError(f"{cmd}: the Chromium host is not running. {self._tail()}")
            msg_id = next(self.ids)
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"id": msg_id, "cmd": cmd, "timeout_s": timeout, **args}) + "\n")
            self.proc.stdin.flush()
            return self._wait(msg_id, timeout + 60.0, cmd)

    def scratch(self, suffix: str) -> Path:
        """A fresh file name under the host's temporary directory (feeds, serialised models)."""
        return self.tmp / f"{next(self.files)}{suffix}"

    @staticmethod
    def read_output(file: str | os.PathLike[str]) -> bytes:
        """The raw bytes of one output the page posted, the file removed."""
        path = Path(file)
        data = path.read_bytes()
        path.unlink(missing_ok=True)
        return data

    def stop(self) -> None:
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the host closes Chromium when its input ends
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except (OSError, ValueError):
                pass  # a reader thread holds it
        shutil.rmtree(self.tmp, ignore_errors=True)
        _LEFT.append(self.tmp)  # a killed host's Chromium may still write its profile while it exits


_HOST: BrowserHost | None = None
_LEFT: list[Path] = []
_HOST_LOCK = threading.Lock()


def get_host() -> BrowserHost:
    """The process's one Chromium host, started on first use and again when it died."""
    global _HOST
    with _HOST_LOCK:
        if _HOST is None or not _HOST.alive():
            if _HOST is not None:
                _HOST.stop()
            _HOST = BrowserHost()
        return _HOST


def running_host() -> BrowserHost | None:
    """The host if one is running (no start)."""
    return _HOST if _HOST is not None and _HOST.alive() else None


@atexit.register
def stop_host() -> None:
    global _HOST
    if _HOST is not None:
        _HOST.stop()
        _HOST = None
    for tmp in _LEFT:
        shutil.rmtree(tmp, ignore_errors=True)

"""The one Node.js process that serves every JavaScript runner of a Python process (``js/host.mjs``).

Started lazily by the first :class:`~.node.NodeRunner`, stopped at exit, started again when it died (a
runner whose session lived in the dead process loads its file again). Requests are JSON lines; tensors
travel as raw little-endian files in the host's temporary folder. Every request has a timeout: a host
that does not answer is killed and the request fails with a message, never a hang.
"""
from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import OnnxParityError
from .npm import JS_DIR, npm_dir

HOST_SCRIPT = JS_DIR / "host.mjs"
#: seconds the host may take to start, load a file, run a batch
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 600.0
_STDERR_TAIL = 2000
#: free bytes /dev/shm needs to hold the tensor files
SHM_MIN_FREE = 4 << 30


class HostError(OnnxParityError):
    """The Node.js host could not start, died, or did not answer in time (not an error of the file)."""


class HostRequestError(OnnxParityError):
    """The host answered a request with an error (its message is the runtime's own words)."""


class NodeHost:
    """One ``node host.mjs`` process: :meth:`request` sends a command and waits for its answer."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="onnx-parity-node-", dir=_fast_tmp()))
        self._log = open(self.tmp / "host.log", "w+b")  # noqa: SIM115 - closed in stop()
        node = shutil.which("node")
        if node is None:
            raise HostError("node not on PATH: install Node.js 20 or newer")
        self.proc = subprocess.Popen([node, str(HOST_SCRIPT), str(npm_dir())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, cwd=str(self.tmp))
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="onnx-parity-node-host", daemon=True)
        self._reader.start()
        self._lock = threading.Lock()
        self._next = 0
        self._count = 0
        ready = self._answer(0, START_TIMEOUT_S, "start")
        self.pid = int(ready["pid"])
        self._versions: dict[str, str] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._lines.put(line)
        except (OSError, ValueError):  # the pipe was closed by stop()
            pass
        self._lines.put(None)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, cmd: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send ``cmd`` with ``fields``; its answer (without ``id``/``ok``), or :class:`HostRequestError`
        carrying the runtime's message, or :class:`HostError` when the host died or did not answer."""
        with self._lock:
            if not self.alive:
                raise HostError(f"the Node.js host (pid {self.pid}) is not running{self._stderr()}")
            self._next += 1
            line = json.dumps({"id": self._next, "cmd": cmd, **fields}) + "\n"
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except OSError as exc:
                raise HostError(f"the Node.js host (pid {self.pid}) stopped reading requests: {exc}{self._stderr()}") from exc
            return self._answer(self._next, REQUEST_TIMEOUT_S if timeout is None else timeout, cmd)

    def _answer(self, want: int, timeout: float, cmd: str) -> dict[str, Any]:
        while True:
            try:
                raw = self._lines.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise HostError(f"the Node.js host did not answer '{cmd}' within {timeout:.0f} s and was stopped; "
                                "a later request starts a new one") from None
            if raw is None:
                self.proc.wait(timeout=5)
                raise HostError(f"the Node.js host stopped (exit {self.proc.returncode}) during '{cmd}'{self._stderr()}")
            try:
                reply = json.loads(raw)
            except ValueError:
                continue  # not the protocol: a line a library printed
            if reply.get("id") != want:
                continue
            if not reply.pop("ok", False):
                raise HostRequestError(str(reply.get("error") or "unknown error"))
            reply.pop("id", None)
            return reply

    def versions(self) -> dict[str, str]:
        if self._versions is None:
            self._versions = {k: str(v) for k, v in self.request("versions", timeout=START_TIMEOUT_S).items() if v}
        return self._versions

    def scratch(self, suffix: str) -> Path:
        """A new file name in the host's temporary folder."""
        self._count += 1
        return self.tmp / f"{os.getpid()}-{self._count}{suffix}"

    def _stderr(self) -> str:
        try:
            self._log.flush()
            text = (self.tmp / "host.log").read_bytes().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f": {text[-_STDERR_TAIL:]}" if text else ""

    def stop(self) -> None:
        """End the process (stdin closed, killed when it does not exit), close its pipes, remove its folder."""
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _fast_tmp() -> str | None:
    """A memory-backed folder for the tensor files where there is a roomy one (``/dev/shm`` with at least
    :data:`SHM_MIN_FREE` bytes free; containers often give it 64 MiB), else the default temporary folder."""
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    return shm if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize >= SHM_MIN_FREE else None


_HOST: NodeHost | None = None
_HOST_LOCK = threading.Lock()
#: how many hosts this process started (a runner's session belongs to one of them)
generation = 0


def get_host() -> tuple[NodeHost, int]:
    """The process-wide host and its generation, started when there is none or the last one died."""
    global _HOST, generation
    with _HOST_LOCK:
        if _HOST is None or not _HOST.alive:
            if _HOST is not None:
                _HOST.stop()
            _HOST = NodeHost()
            generation += 1
        return _HOST, generation


def stop_host() -> None:
    """Stop the process-wide host (at exit; a later runner starts a new one)."""
    global _HOST
    with _HOST_LOCK:
        if _HOST is not None:
            _HOST.stop()
            _HOST = None


atexit.register(stop_host)

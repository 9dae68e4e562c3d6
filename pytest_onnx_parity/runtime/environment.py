"""The environment a verdict depends on: library versions, the CPU's model and the instruction-set
flags that int8 and fp16 results depend on (:func:`environment`, the JSON report's ``environment``).

ONNX Runtime's CPU kernels differ by instruction set: on x86-64 with AVX2 or AVX-512
but without VNNI, its U8S8 int8 kernels use ``VPMADDUBSW``, whose 16-bit intermediate
sums can saturate; ONNX Runtime's quantization documentation recommends
``reduce_range=True`` (7-bit weights) for U8S8 on such machines, "not needed on machines
supporting VNNI" (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html,
"When to use reduce-range and per-channel quantization?"). So the same int8 file can
classify a photo differently on two CPUs, and reports record which CPU they ran on.

Read from ``/proc/cpuinfo`` on Linux (``sysctl`` on macOS); nothing is imported but the
standard library, so the plugin can call it at start-up.
"""
from __future__ import annotations

import os

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["CPU_KEYS", "RELEVANT_FLAGS", "VNNI_FLAGS", "cpu_flags_text", "cpu_info", "describe", "has_vnni", "int8_reduce_range",
           "environment", "is_x86", "library_versions", "probe_cpu", "read_cpuinfo"]

# the flags that decide which int8 / fp16 kernels ONNX Runtime (MLAS) picks, in the order reports show them
RELEVANT_FLAGS = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                  "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
                  "asimd", "asimddp", "i8mm", "fphp", "asimdhp")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # x86 instructions that make U8S8 exact (no saturation)
CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo(path: str | Path | None = None) -> dict[str, Any]:
    """``{"model": str | None, "flags": set[str]}`` from a Linux ``/proc/cpuinfo`` (first CPU; ``path``
    defaults to :data:`CPUINFO`); empty when unreadable."""
    model: str | None = None
    flags: set[str] = set()
    try:
        text = Path(CPUINFO if path is None else path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"model": None, "flags": flags}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 "flags", ARM "Features"
            flags = set(value.split())
    return {"model": model, "flags": flags}


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def probe_cpu() -> tuple[str | None, str, frozenset[str]]:
    """``(model, machine, flags)`` of this machine, read once per process: the flag reader every other
    function here goes through (tests replace it to play another CPU)."""
    system, machine = platform.system(), platform.machine()
    if system == "Linux":
        info = read_cpuinfo()
        return info["model"] or platform.processor() or None, machine, frozenset(info["flags"])
    if system == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or None
        flags = " ".join(_sysctl(k) for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")).lower()
        names = set(flags.replace(".", "_").split())
        if "avx512vnni" in names:
            names.add("avx512_vnni")
        return model, machine, frozenset(names)
    return platform.processor() or None, machine, frozenset()


def cpu_info() -> dict[str, Any]:
    """``{"model", "machine", "flags"}``: the CPU's name, ``platform.machine()`` and the subset of
    :data:`RELEVANT_FLAGS` it has, in that order (``flags`` is ``None`` where they cannot be read)."""
    model, machine, flags = probe_cpu()
    return {"model": model, "machine": machine,
            "flags": [f for f in RELEVANT_FLAGS if f in flags] if flags else None}


def cpu_flags_text(info: dict[str, Any] | None = None) -> str:
    """The relevant flags, space separated (``"unknown"`` where they cannot be read)."""
    info = cpu_info() if info is None else info
    return " ".join(info["flags"]) if info.get("flags") is not None else "unknown"


def is_x86(info: dict[str, Any] | None = None) -> bool:
    info = cpu_info() if info is None else info
    return str(info.get("machine") or "").lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def has_vnni(info: dict[str, Any] | None = None) -> bool:
    """Whether this x86 CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    info = cpu_info() if info is None else info
    return bool(set(info.get("flags") or ()) & set(VNNI_FLAGS))


def int8_reduce_range(info: dict[str, Any] | None = None) -> bool:
    """ONNX Runtime's advice for U8S8 files: ``reduce_range=True`` on x86-64 without VNNI, ``False`` elsewhere
    (with VNNI, and on ARM, U8S8 does not saturate, and 7-bit weights only cost precision: on this project's
    AVX-512/VNNI machine they took Lite0's agreement on 48 views from 95.8% to 77.1%, docs/precision.md).
    An x86 CPU whose flags cannot be read gets ``True``, the setting that is safe on every x86 CPU."""
    info = cpu_info() if info is None else info
    return is_x86(info) and not has_vnni(info)


def describe(info: dict[str, Any] | None = None) -> str:
    """One line: the CPU, its relevant instruction-set flags and the int8 setting chosen for it."""
    info = cpu_info() if info is None else info
    return (f"CPU: {info.get('model') or 'unknown'} ({info.get('machine')}); instruction-set flags: "
            f"{cpu_flags_text(info)}; VNNI: {'yes' if has_vnni(info) else 'no'}; int8 reduce_range: "
            f"{int8_reduce_range(info)}")


def on_ci() -> bool:
    """True when the environment variable ``CI`` is set to anything but empty, ``0``, ``false`` or ``no``: there a
    runtime that cannot start is an error (a CI machine must have every runtime it tests), never a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def library_versions() -> dict[str, str]:
    """The versions of the libraries a verdict depends on, read from package metadata (nothing is imported)."""
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "timm", "onnx", "onnxscript", "onnxruntime", "pytest-onnx-parity"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out


CPU_KEYS = ("cpu", "machine", "cpu_flags")  # environment() keys describing the CPU


def environment() -> dict[str, str]:
    """Library versions, read from package metadata (nothing is imported), and the CPU: its model
    (``cpu``), ``machine`` and the instruction-set flags int8 and fp16 kernels depend on (``cpu_flags``,
    space separated: :func:`cpu_info`)."""
    info = cpu_info()
    return {**library_versions(), "cpu": str(info["model"] or "unknown"), "machine": str(info["machine"] or "unknown"),
            "cpu_flags": cpu_flags_text(info)}


if __name__ == "__main__":  # python -m pytest_onnx_parity.runtime.environment (CI prints it before the tests)
    print(describe())

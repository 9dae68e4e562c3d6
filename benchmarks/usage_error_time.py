"""How fast a usage error comes back: ``onnx-parity check`` with a checkpoint that does not exist.

A missing checkpoint must be refused before torch or timm is imported (tests/test_shipped.py checks
that no torch or timm module is loaded and the exit code 2); this measures what that buys: the wall time
of ``python -m pytest_onnx_parity check FILE --model NAME=missing.safetensors`` from the shell, start to
exit, the median and the slowest of ``--runs`` runs, beside ``python -c "import torch, timm"`` (what the
error would cost had it come after those imports). Writes the ``usage-error-time`` block of
docs/performance.md (benchmarks/docblock.py's write_block).

    python benchmarks/usage_error_time.py [--runs 7] [--json PATH]
    python benchmarks/usage_error_time.py --from-json PATH     # rewrite the block from saved measurements
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docblock import write_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
MARKER = "usage-error-time"


def timed(cmd: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False, timeout=300)
    return time.perf_counter() - t0, proc


def measure(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(b"not read: the checkpoint is refused first")
        missing = Path(tmp) / "missing.safetensors"
        check = [sys.executable, "-m", "pytest_onnx_parity", "check", "model.onnx", "--model", f"test_vit={missing}"]
        usage = []
        for _ in range(runs):
            seconds, proc = timed(check, tmp)
            if proc.returncode != 2 or "checkpoint file not found" not in proc.stderr:
                raise SystemExit(f"expected the usage error (exit 2), got {proc.returncode}: {proc.stderr[-400:]}")
            usage.append(seconds)
        imports = [timed([sys.executable, "-c", "import torch, timm"], tmp)[0] for _ in range(max(1, runs // 2))]
    return {"runs": runs, "usage_error_s": usage, "import_torch_timm_s": imports,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}",
            "python": platform.python_version()}


def render(m: dict[str, object]) -> str:
    usage, imports = list(m["usage_error_s"]), list(m["import_torch_timm_s"])  # type: ignore[call-overload]
    return "\n".join([
        "`python -m pytest_onnx_parity check model.onnx --model test_vit=missing.safetensors` (exit 2, the checkpoint "
        "named as missing), start to exit, against `python -c \"import torch, timm\"`; "
        f"{m['runs']} runs, {m['machine']}, Python {m['python']}. Measured by `benchmarks/usage_error_time.py`.", "",
        "| command | median | slowest |", "| --- | ---: | ---: |",
        f"| `onnx-parity check` with a missing checkpoint | {statistics.median(usage):.2f} s | {max(usage):.2f} s |",
        f"| `import torch, timm` alone | {statistics.median(imports):.2f} s | {max(imports):.2f} s |", "",
        "The error comes before torch and timm are imported (tests/test_shipped.py asserts that, and the exit code; "
        "no test asserts a wall time, which another job on the machine would move)."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", help="also save the measurements here")
    parser.add_argument("--from-json", help="rewrite the block from saved measurements")
    args = parser.parse_args(argv)
    m = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps(m, indent=2) + "\n")
    write_block(DOC, MARKER, render(m), heading="## A usage error from the shell")
    print(render(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Zoo sweep: the ONNX parity gate over the smallest variant of every timm family, with both exporters.

Not part of the test suite. It picks the models, runs the gate on them with
pytest-xdist in shards (as a CI matrix would), once per exporter (dynamo, then
TorchScript, each with its own folder and export cache), merges the shard reports,
classifies every model that did not pass into one cause class
(benchmarks/zoo_causes.py) and writes one ``zoo-sweep`` block of
``docs/compatibility.md`` with both exporters (benchmarks/zoo_doc.py, written
through benchmarks/docblock.py; the text around the block is kept).

Selection rule (documented in the output too)
---------------------------------------------
* Candidates: every name of ``timm.list_models()`` except the ``test_*`` models.
* Family: the first ``_``-separated token of the name, with its trailing size
  digits and variant letters stripped (``resnet50d`` -> ``resnet``,
  ``regnetx_002`` -> ``regnetx``), keeping a version suffix (``mobilenetv3``,
  ``convnextv2``) and a digit inside a word (``res2net``, ``cs3darknet``). A
  port prefix (``tf_``, ``tv_``, ``gluon_``, ``legacy_``, ...) makes its own
  family, because those ports differ in padding and layers.
* Per family, the architecture with the fewest parameters, counted on the
  ``meta`` device (no memory, no weights); ties go to the smaller default input,
  then the name.
* Families whose smallest architecture has more than ``--max-params`` parameters
  (default 100M) or a default input side over ``--max-side`` pixels (default 512)
  are left out and listed as such: they do not fit a 2-core sweep.

Usage::

    python benchmarks/zoo_sweep.py --out /tmp/zoo --exporters both   # select, run both, merge, classify, write the doc
    python benchmarks/zoo_sweep.py --out /tmp/zoo --exporters torchscript   # one exporter; the doc shows every
                                                                            # exporter with reports in /tmp/zoo
    python benchmarks/zoo_sweep.py --out /tmp/zoo --select-only
    python benchmarks/zoo_sweep.py --out /tmp/zoo --exporters both --render-only   # write the doc from saved reports

Folder layout: ``OUT/params.json`` and ``OUT/selection.json`` (shared), ``OUT/code-<sha>``
(the snapshot), and per exporter ``OUT/EXPORTER/`` with its shard reports, logs, reruns,
``timings.json``, export ``cache/``, merged ``all.json`` and ``table.md``/``table.html``.

Failed checks are not diagnosed here: the package arbitrates every failed comparison
against torch in float64 itself and records the evidence in the check's details
(``details["float64"]``, ``details["torch_self_sensitivity"]``), which the document quotes.

The gate runs from a snapshot of the package at a git commit (``--code HEAD`` by
default, extracted with ``git archive`` into ``OUT/code-<sha>``), so work that
others commit or leave uncommitted while the sweep runs does not change it
halfway; the commit is written into the document. Both exporters run the same snapshot.

A run resumes: shards whose report exists are not run again. A shard whose
process dies or runs past ``--shard-timeout`` loses its report (the gate writes
it at the end of the session); its models are then rerun one by one without
xdist, and a model that still times out or crashes the process is recorded as
an error whose text says so ("recorded by zoo_sweep.py").
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zoo_causes import classify_report
from zoo_doc import write_doc

REPO = Path(__file__).resolve().parents[1]
EXPORTERS = ("dynamo", "torchscript")
CODE: dict[str, str] = {}  # commit and folder of the package snapshot the gate runs from

PORT_PREFIXES = {"tf", "tv", "gluon", "legacy", "ig", "ssl", "swsl", "fb", "hf", "timm", "dm"}
_FAMILY = re.compile(r"^(?:[a-z]+\d[a-z]{3,}|[a-z]+?(?:v\d+)?)(?=\d|$)")


def family(name: str) -> str:
    toks = name.split("_")
    prefix = ""
    if toks[0] in PORT_PREFIXES and len(toks) > 1:
        prefix, toks = toks[0] + "_", toks[1:]
    m = _FAMILY.match(toks[0])
    return prefix + (m.group(0) if m else toks[0])


# -- selection --------------------------------------------------------------------------------------


def count_params(out: Path) -> dict[str, Any]:
    """Parameter counts and default input sizes of all timm models, built on the meta device (cached)."""
    cache = out / "params.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    import warnings

    import timm
    import torch

    warnings.filterwarnings("ignore")
    names = [n for n in timm.list_models() if not n.startswith("test_")]
    res: dict[str, Any] = {"timm": timm.__version__, "torch": torch.__version__, "models": {}}
    t0 = time.time()
    for i, n in enumerate(names):
        try:
            with torch.device("meta"):
                m = timm.create_model(n, pretrained=False)
            size = list(m.pretrained_cfg.get("input_size") or (3, 224, 224))
            res["models"][n] = {"params": int(sum(p.numel() for p in m.parameters())), "input_size": size}
        except Exception as exc:  # a model that cannot be built on meta is simply not a candidate
            res["models"][n] = {"params": None, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        if i % 100 == 0:
            print(f"  counted {i}/{len(names)} ({time.time() - t0:.0f}s)", flush=True)
    cache.write_text(json.dumps(res, indent=1))
    return res


def select(out: Path, max_params: float, max_side: int) -> dict[str, Any]:
    path = out / "selection.json"
    if path.is_file():
        return json.loads(path.read_text())
    counted = count_params(out)
    fams: dict[str, list[tuple[int, int, str]]] = {}
    for n, info in counted["models"].items():
        if info.get("params") is None:
            continue
        side = max(info["input_size"][1:]) if len(info["input_size"]) == 3 else 224
        fams.setdefault(family(n), []).append((info["params"], side, n))
    chosen, left_out = [], []
    for fam, cands in sorted(fams.items()):
        params, side, name = min(cands)
        row = {"family": fam, "model": name, "params": params, "input_side": side, "variants": len(cands)}
        if params > max_params:
            left_out.append({**row, "why": f"smallest has {params / 1e6:.0f}M parameters (> {max_params / 1e6:.0f}M)"})
        elif side > max_side:
            left_out.append({**row, "why": f"default input {side}px (> {max_side}px)"})
        else:
            chosen.append(row)
    sel = {"rule": __doc__.split("Selection rule (documented in the output too)")[1].split("Usage::")[0].strip("-\n "),
           "max_params": max_params, "max_side": max_side, "timm": counted["timm"], "candidates": len(counted["models"]),
           "families": len(fams), "chosen": chosen, "left_out": left_out}
    path.write_text(json.dumps(sel, indent=1))
    return sel


# -- running -----------------------------------------------------------------------------------------


def shard_of(out: Path, models: list[str], k: int, n: int, exporter: str) -> list[str]:
    """The models of shard K/N as the snapshot's gate picks them (asked in a subprocess running the snapshot)."""
    code = ("import json, sys\nfrom types import SimpleNamespace as S\n"
            "models, k, n, exporter = json.load(sys.stdin)\n"
            "try:\n    from pytest_onnx_parity.variants import shard_pairs\n"
            "    pairs = shard_pairs([(S(text=m), S(exporter=exporter, opset=None)) for m in models], (k, n))\n"
            "    print(json.dumps([p[0].text for p in pairs]))\n"
            "except ImportError:  # a snapshot from before the matrix\n"
            "    from pytest_onnx_parity.plugin.gate import shard_specs\n"
            "    print(json.dumps([s.text for s in shard_specs([S(text=m) for m in models], (k, n))]))\n")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([models, k, n, exporter]), capture_output=True,
                          text=True, cwd=out / "run", env=_env(), check=True)
    return json.loads(proc.stdout)


def _env() -> dict[str, str]:
    # one intra-op thread per xdist worker: -n 2 on 2 cores without oversubscription
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if CODE:  # the snapshot comes before the editable install
        env["PYTHONPATH"] = os.pathsep.join([CODE["folder"], *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def gate_command(args: argparse.Namespace, out: Path, report: Path, *, shard: tuple[int, int] | None,
                 workers: int, junit: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rN", "--onnx-parity",
           f"--onnx-parity-exporter={args.exporter}", f"--onnx-parity-layers={args.layers}",
           f"--onnx-parity-cache-dir={out / 'cache'}", f"--onnx-parity-report={report}"]
    if shard:
        cmd.append(f"--onnx-parity-shard={shard[0]}/{shard[1]}")
    cmd += ["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]
    if junit:
        cmd.append(f"--junitxml={junit}")
    return cmd


def snapshot(out: Path, rev: str | None) -> None:
    """Extract the package at git revision ``rev`` into ``out/code-<sha>`` and import it from there.

    Without ``rev``: the commit this sweep folder was started with (``out/code.json``), else HEAD.
    """
    pinned = out / "code.json"
    if rev is None and pinned.is_file():
        rev = json.loads(pinned.read_text())["sha"]
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev or "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    if not pinned.is_file():
        pinned.write_text(json.dumps({"sha": sha}))
    folder = out / f"code-{sha[:12]}"
    if not (folder / "pytest_onnx_parity" / "__init__.py").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "pytest_onnx_parity"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    subject = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%s", sha], capture_output=True,
                             text=True, check=True).stdout.strip()
    CODE.update(sha=sha, folder=str(folder), subject=subject)


def run_logged(cmd: list[str], cwd: Path, log: Path, timeout: float) -> tuple[int | None, float]:
    """Run ``cmd`` in its own process group; ``(returncode or None on timeout, seconds)``."""
    t0 = time.perf_counter()
    env = _env()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def run_sweep(args: argparse.Namespace, out: Path, models: list[str]) -> None:
    run_dir = out / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    # the models go into an ini file of an empty rootdir: nothing else is collected
    (run_dir / "pytest.ini").write_text("[pytest]\nonnx_parity_models =\n" + "".join(f"    {m}\n" for m in models))
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {"shards": {}, "reruns": {}}
    n = args.shards
    for k in range(1, n + 1):
        report = out / f"shard-{k}-of-{n}.json"
        if report.is_file():
            continue
        if args.max_minutes and _spent(timings) > args.max_minutes * 60:
            print(f"time budget of {args.max_minutes} min spent: stopping before shard {k}/{n}", flush=True)
            break
        mine = shard_of(out, models, k, n, args.exporter)
        print(f"[{_now()}] shard {k}/{n}: {len(mine)} models", flush=True)
        cmd = gate_command(args, out, report, shard=(k, n), workers=args.workers, junit=out / f"shard-{k}-of-{n}.xml")
        rc, wall = run_logged(cmd, run_dir, out / f"shard-{k}-of-{n}.log", args.shard_timeout)
        timings["shards"][f"{k}/{n}"] = {"models": len(mine), "wall_s": round(wall, 1), "rc": rc, "load": _load()}
        timings_path.write_text(json.dumps(timings, indent=1))
        print(f"[{_now()}] shard {k}/{n} done in {wall / 60:.1f} min (rc {rc})", flush=True)
        done = set()
        if report.is_file():
            done = {e["model"] for e in json.loads(report.read_text())["models"]}
        missing = [m for m in mine if m not in done]
        if missing:
            print(f"  {len(missing)} model(s) missing from the shard report: rerunning one by one: {missing}", flush=True)
            rerun_singly(args, out, run_dir, missing, timings, timings_path)
        if not report.is_file():  # mark the shard as handled: its models are in the rerun reports
            (out / f"shard-{k}-of-{n}.json").write_text(json.dumps(
                {"schema": 1, "environment": {}, "models": [],
                 "notes": [f"shard {k}/{n}: the gate process ended without a report (rc {rc}); its models were rerun singly"]}))


def rerun_singly(args: argparse.Namespace, out: Path, run_dir: Path, models: list[str], timings: dict[str, Any],
                 timings_path: Path) -> None:
    for m in models:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", m)
        report = out / "reruns" / f"{safe}.json"
        report.parent.mkdir(exist_ok=True)
        if report.is_file():
            continue
        cmd = gate_command(args, out, report, shard=None, workers=1, junit=None)
        cmd.append(f"--onnx-parity-models={m}")
        rc, wall = run_logged(cmd, run_dir, out / "reruns" / f"{safe}.log", args.model_timeout)
        timings["reruns"][m] = {"wall_s": round(wall, 1), "rc": rc}
        timings_path.write_text(json.dumps(timings, indent=1))
        if not report.is_file():
            why = (f"timed out: the gate ran past {args.model_timeout:.0f}s on this model and was killed" if rc is None
                   else f"the gate process died with {_rc_text(rc)} while checking this model")
            entry = {"model": m, "status": "error", "exporter": args.exporter, "opset": None, "weights": "random",
                     "max_abs_diff": None, "top1_agreement": None, "first_divergence": None, "cache_hit": False,
                     "timings": {"total_s": round(wall, 1)}, "error": f"{why} (recorded by zoo_sweep.py)", "checks": []}
            report.write_text(json.dumps({"schema": 1, "environment": {}, "models": [entry]}))


def _rc_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


def _spent(timings: dict[str, Any]) -> float:
    return sum(s["wall_s"] for s in timings["shards"].values()) + sum(r["wall_s"] for r in timings["reruns"].values())


def _now() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# -- merging and writing the document -------------------------------------------------------------------------------


def merge_all(out: Path, models: list[str]) -> dict[str, Any]:
    """Merge the shard and rerun reports in ``out`` (one exporter's folder) into ``out/all.json`` and tables."""
    from pytest_onnx_parity.report.schema import merge_reports, write_json
    from pytest_onnx_parity.report.render import render_html, render_markdown

    paths = sorted(out.glob("shard-*-of-*.json"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
    paths += sorted((out / "reruns").glob("*.json")) if (out / "reruns").is_dir() else []
    if not paths:
        print(f"  no reports in {out} yet", flush=True)
        return {"schema": 1, "environment": {}, "models": []}
    merged = merge_reports(paths)
    env = next((p for p in paths if json.loads(p.read_text()).get("environment")), None)
    if env is not None and not merged.get("environment"):
        merged["environment"] = json.loads(env.read_text())["environment"]
    wanted = set(models)
    merged["models"] = [e for e in merged["models"] if e["model"] in wanted]
    write_json(merged, out / "all.json")
    (out / "table.md").write_text(render_markdown(merged))
    (out / "table.html").write_text(render_html(merged, title="ONNX parity of the timm zoo (smallest variant per family)"))
    return merged


def _exporters(text: str) -> list[str]:
    names = ["dynamo", "torchscript"] if text.strip() == "both" else [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in EXPORTERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown exporter(s) {bad or text!r}: use dynamo, torchscript, "
                                         "a comma-separated list of them, or both")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("zoo-sweep"),
                   help="Working folder: selection and code snapshot, and per exporter OUT/EXPORTER (reports, logs, cache)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "compatibility.md", help="Where to write the document")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per shard (-n)")
    p.add_argument("--exporters", "--exporter", dest="exporters", type=_exporters, default=["dynamo", "torchscript"],
                   help="dynamo, torchscript, both, or a comma-separated list (default: both, run one after the other)")
    p.add_argument("--layers", default="never", choices=("always", "on-failure", "never"))
    p.add_argument("--max-params", type=float, default=100e6)
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--limit", type=int, default=0, help="Check only the first N chosen models (a trial run)")
    p.add_argument("--only", default="", metavar="NAMES",
                   help="Check only these chosen models (comma-separated; a trial run or a rerun of a few)")
    p.add_argument("--shard-timeout", type=float, default=45 * 60)
    p.add_argument("--model-timeout", type=float, default=15 * 60)
    p.add_argument("--max-minutes", type=float, default=0,
                   help="Per exporter: start no new shard after this much gate time")
    p.add_argument("--code", default=None,
                   help="git revision of the package to run (default: the one the folder started with, else HEAD)")
    p.add_argument("--select-only", action="store_true")
    p.add_argument("--render-only", action="store_true",
                   help="Merge the saved reports of the exporters and write the document; run nothing")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    snapshot(out, args.code)
    sys.path.insert(0, str(REPO))  # the gate runs the snapshot; merging and rendering use this checkout's report.py
    print(f"running pytest-onnx-parity {CODE['sha'][:12]} from {CODE['folder']}", flush=True)
    sel = select(out, args.max_params, args.max_side)
    models = [c["model"] for c in sel["chosen"]]
    if args.limit:
        models = models[: args.limit]
    if args.only:
        only = [m.strip() for m in args.only.split(",") if m.strip()]
        unknown = [m for m in only if m not in models]
        if unknown:
            p.error(f"--only: {unknown} are not among the chosen models (see --select-only)")
        models = only
    print(f"{len(models)} models chosen from {sel['families']} families; {len(sel['left_out'])} families left out", flush=True)
    if args.select_only:
        print("\n".join(models))
        return 0
    for exporter in args.exporters:
        if not args.render_only:
            ex_out = out / exporter
            ex_out.mkdir(exist_ok=True)
            print(f"[{_now()}] exporter {exporter}: {ex_out}", flush=True)
            run_sweep(argparse.Namespace(**{**vars(args), "exporter": exporter}), ex_out, models)
    # the document shows every exporter with reports in OUT, so two commands (one per exporter) write one document
    runs: dict[str, dict[str, Any]] = {}
    for exporter in EXPORTERS:
        ex_out = out / exporter
        if exporter not in args.exporters and not list(ex_out.glob("shard-*-of-*.json")):
            continue
        ex_out.mkdir(exist_ok=True)
        merged = merge_all(ex_out, models)
        timings_path = ex_out / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {"shards": {}, "reruns": {}}
        runs[exporter] = {"merged": merged, "timings": timings}
        classes = {k: len(v) for k, v in classify_report(merged).items() if v}
        print(f"[{_now()}] {exporter}: {len(merged['models'])} models, {_spent(timings) / 60:.1f} min; "
              f"not passed by class: {classes or 'none'}", flush=True)
    write_doc(args.doc.resolve(), sel, runs, {"workers": args.workers, "shards": args.shards, "layers": args.layers},
              CODE)
    print(f"[{_now()}] wrote {args.doc} (reports in {', '.join(str(out / x) for x in runs)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Zoo sweep: the ONNX parity gate over the smallest variant of every timm family.

Not part of the test suite. It picks the models, runs the gate on them with
pytest-xdist in shards (as a CI matrix would), merges the shard reports, renders
the compatibility table and writes the figures into the ``zoo-sweep`` block of
``docs/compatibility.md`` (benchmarks/docblock.py; the text around the block is kept).

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

    python benchmarks/zoo_sweep.py --out /tmp/zoo            # select, run, merge, render, write the doc
    python benchmarks/zoo_sweep.py --out /tmp/zoo --select-only
    python benchmarks/zoo_sweep.py --out /tmp/zoo --render-only   # after a partial run: write what there is

The gate runs from a snapshot of the package at a git commit (``--code HEAD`` by
default, extracted with ``git archive`` into ``OUT/code-<sha>``), so work that
others commit or leave uncommitted while the sweep runs does not change it
halfway; the commit is written into the document.

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
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from docblock import write_block

REPO = Path(__file__).resolve().parents[1]
TITLE = "# Compatibility of the timm zoo with ONNX export and ONNX Runtime"
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


def shard_of(out: Path, models: list[str], k: int, n: int) -> list[str]:
    """The models of shard K/N as the snapshot's gate picks them (asked in a subprocess running the snapshot)."""
    code = ("import json, sys\nfrom types import SimpleNamespace as S\nfrom pytest_onnx_parity.gate import shard_specs\n"
            "models, k, n = json.load(sys.stdin)\n"
            "print(json.dumps([s.text for s in shard_specs([S(text=m) for m in models], (k, n))]))")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([models, k, n]), capture_output=True, text=True,
                          cwd=out / "run", env=_env(), check=True)
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
        mine = shard_of(out, models, k, n)
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


# -- diagnosing failures against a float64 reference -------------------------------------------------


def diagnose_one(name: str, exporter: str, cache_dir: str) -> dict[str, Any]:
    """Torch float32, torch float64 and ONNX Runtime on the gate's inputs (the seeded random batch and
    the bundled photos through timm's transform): is ONNX Runtime farther from the float64 reference
    than float32 torch itself is?"""
    import numpy as np
    import torch

    from pytest_onnx_parity import export_onnx, load_model
    from pytest_onnx_parity.dataconfig import resolve_data_config
    from pytest_onnx_parity.export import make_session
    from pytest_onnx_parity.images import bundled_image_paths
    from pytest_onnx_parity.forward import ort_forward, random_batch
    from pytest_onnx_parity.preprocessing import open_image
    from pytest_onnx_parity.realcheck import timm_eval_transform

    model = load_model(name)
    exp = export_onnx(model, exporter=exporter, cache_dir=cache_dir)
    sess = make_session(exp.path)
    tf = timm_eval_transform(model)
    inputs = {"random": random_batch(resolve_data_config(model), 4, 0),
              "real": np.stack([tf(open_image(p)).numpy() for p in bundled_image_paths()])}
    import copy

    m64 = copy.deepcopy(model).double()  # the very same weights, in float64
    out: dict[str, Any] = {"cache_hit": exp.cache_hit}
    for kind, x in inputs.items():
        with torch.no_grad():
            t32 = model(torch.from_numpy(x))
            t64 = m64(torch.from_numpy(x).double())
        t32 = (t32[0] if isinstance(t32, (tuple, list)) else t32).numpy().astype(np.float64)
        t64 = (t64[0] if isinstance(t64, (tuple, list)) else t64).numpy()
        o = ort_forward(sess, x).astype(np.float64)
        fin = np.isfinite(t64)
        out[kind] = {
            "rms": float(np.sqrt(np.mean(t64[fin] ** 2))) if fin.any() else None,
            "torch32_vs_64": float(np.abs(t32 - t64).max()), "onnx_vs_64": float(np.abs(o - t64).max()),
            "finite": {"torch64": bool(fin.all()), "torch32": bool(np.isfinite(t32).all()), "onnx": bool(np.isfinite(o).all())},
        }
    return out


def verdict(entry: dict[str, Any], diag: dict[str, Any]) -> str:
    """One line: ill-conditioned (ONNX Runtime no farther from float64 than float32 torch) or a real mismatch."""
    if "error" in diag:
        return f"no diagnosis: {diag['error']}"
    bad = {c["name"] for c in entry.get("checks", []) if c.get("status") in ("failed", "error")}
    kinds = (["random"] if bad & {"logits", "topk", "batch_consistency"} else []) + (["real"] if "real_images" in bad else [])
    parts, mismatch = [], False
    for kind in kinds or ["random", "real"]:
        d = diag[kind]
        where = "random batch" if kind == "random" else "real photos"
        if not all(d["finite"].values()):
            parts.append(f"{where}: non-finite logits (torch64 {d['finite']['torch64']}, torch32 {d['finite']['torch32']}, "
                         f"ONNX {d['finite']['onnx']}) at logit RMS {d['rms'] or float('nan'):.3g}")
            continue
        ill = d["onnx_vs_64"] <= 2 * d["torch32_vs_64"]
        mismatch = mismatch or not ill
        parts.append(f"{where}: float32 torch is {d['torch32_vs_64']:.3g} from float64 torch, ONNX Runtime "
                     f"{d['onnx_vs_64']:.3g} (logit RMS {d['rms']:.3g})")
    head = "real mismatch" if mismatch else "ill-conditioned under these random weights (not an export fault)"
    return f"{head}: " + "; ".join(parts)


def diagnose(args: argparse.Namespace, out: Path, merged: dict[str, Any]) -> dict[str, Any]:
    path = out / "diagnosis.json"
    diag = json.loads(path.read_text()) if path.is_file() else {}
    todo = [e["model"] for e in merged["models"]
            if e["status"] != "passed" and e.get("checks") and e["model"] not in diag]
    for m in todo:
        print(f"[{_now()}] diagnosing {m}", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--code", CODE["sha"],
               "--exporter", args.exporter, "--diagnose-one", m]
        log = out / "diagnosis.log"
        env = _env()
        try:
            proc = subprocess.run(cmd, cwd=out / "run", capture_output=True, text=True, env=env, timeout=args.model_timeout)
            with open(log, "a") as fh:
                fh.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("DIAGNOSIS ")]
            diag[m] = json.loads(line[-1][len("DIAGNOSIS "):]) if line else {
                "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
        except subprocess.TimeoutExpired:
            diag[m] = {"error": f"timed out after {args.model_timeout:.0f}s"}
        path.write_text(json.dumps(diag, indent=1))
    return diag


def other_exporter(args: argparse.Namespace, out: Path, merged: dict[str, Any]) -> dict[str, Any]:
    """Rerun the models whose export failed with the other exporter: is there a workaround?"""
    other = "torchscript" if args.exporter == "dynamo" else "dynamo"
    failed = sorted(e["model"] for e in merged["models"]
                    if e["status"] == "error" and whose(str(e.get("error"))) == "torch.onnx exporter")
    report = out / f"other-exporter-{other}.json"
    if not failed:
        return {}
    if not report.is_file():
        alt = argparse.Namespace(**{**vars(args), "exporter": other})
        cmd = gate_command(alt, out, report, shard=None, workers=1, junit=None)
        cmd.append(f"--onnx-parity-models={','.join(failed)}")
        print(f"[{_now()}] rerunning {len(failed)} export errors with --onnx-parity-exporter {other}", flush=True)
        run_logged(cmd, out / "run", out / f"other-exporter-{other}.log", args.shard_timeout)
    if not report.is_file():
        return {}
    return {"exporter": other, "models": {e["model"]: e for e in json.loads(report.read_text())["models"]}}


# -- merging and writing the document -------------------------------------------------------------------------------


def merge_all(out: Path, models: list[str]) -> dict[str, Any]:
    from pytest_onnx_parity.report import merge_reports, render_html, render_markdown, write_json

    paths = sorted(out.glob("shard-*-of-*.json"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.name)])
    paths += sorted((out / "reruns").glob("*.json")) if (out / "reruns").is_dir() else []
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


def whose(text: str) -> str:
    """Whose limitation a reason names, from its wording (a documented, simple rule)."""
    if "recorded by zoo_sweep.py" in text:
        return "sweep limit"
    if "exporter failed" in text:
        return "torch.onnx exporter"
    if "ONNX Runtime cannot load" in text or "ONNX Runtime failed to run" in text:
        return "ONNX Runtime"
    if "timm could not build" in text:
        return "timm"
    if "inconclusive" in text:
        return "ill-conditioned random weights"
    return "see the reason"


# messages of our own argument checks: reaching one of them from the gate is a bug of ours
OURS = ("tolerances must be non-negative numbers",)


def whose_group(group: dict[str, Any], diag: dict[str, Any], entries: dict[str, Any]) -> str:
    base = whose(group["example"])
    if base != "see the reason":
        return base
    ours = any(p in group["example"] for p in OURS)
    ill = all(m in diag and verdict(entries[m], diag[m]).startswith("ill-conditioned") for m in group["models"])
    if ours:
        return "pytest-onnx-parity bug" + (", on ill-conditioned random weights" if ill else "")
    return "ill-conditioned random weights (float64 check below)" if ill else base


def write_doc(args: argparse.Namespace, out: Path, sel: dict[str, Any], merged: dict[str, Any], doc: Path,
              diag: dict[str, Any] | None = None, alt: dict[str, Any] | None = None) -> None:
    from pytest_onnx_parity.report import counts, group_reasons, render_markdown

    diag = diag or {}

    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {"shards": {}, "reruns": {}}
    models = [c["model"] for c in sel["chosen"]]
    got = {e["model"] for e in merged["models"]}
    c = counts(merged)
    wall = _spent(timings)
    n_shards_run = len(timings["shards"])
    lines = [
        "Written by `benchmarks/zoo_sweep.py` from the merged gate reports of a real run; nothing here is estimated. ",
        "Re-create it with `python benchmarks/zoo_sweep.py --out DIR` (see the script's docstring).",
        "",
        "## How the models were picked",
        "",
        sel["rule"].replace("\n    ", "\n"),
        "",
        f"From {sel['candidates']} timm architectures (timm {sel['timm']}) in {sel['families']} families: "
        f"{len(sel['chosen'])} chosen, {len(sel['left_out'])} left out (listed at the end).",
        "",
        "## How they were checked",
        "",
        f"- `pytest -n {args.workers} --onnx-parity --onnx-parity-exporter {args.exporter} --onnx-parity-layers {args.layers}` "
        f"with the models in an ini file, split into {args.shards} shards with `--onnx-parity-shard K/{args.shards}` run one "
        "after the other, reports merged with `python -m pytest_onnx_parity merge`.",
        "- Random weights (`=random`, seed 0, made non-degenerate), data config from each model's pretrained config; "
        "checks: data config in the file, logits and top-k on a random batch, batch consistency, the bundled real photos.",
        f"- `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}` (one torch thread per xdist worker).",
        f"- Per-layer comparison: `--onnx-parity-layers {args.layers}`"
        + (" (left out: the per-layer module was being reworked while the sweep ran, and it adds a second pass per "
           "model on 2 cores; the `first divergence` column is therefore empty)." if args.layers == "never" else "."),
        f"- Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), shared with other work while the sweep "
        f"ran (load averages per shard: {', '.join(s.get('load', '?').split()[0] for s in timings['shards'].values()) or '?'}), "
        f"Python {platform.python_version()}.",
        f"- Environment: {', '.join(f'{k} {v}' for k, v in (merged.get('environment') or {}).items())}.",
        f"- Code: pytest-onnx-parity at commit `{CODE.get('sha', '?')[:12]}` ({CODE.get('subject', '?')}).",
        "",
        "## Figures",
        "",
    ]
    if len(got) < len(models):
        lines += [f"> **Partial run**: {len(got)} of the {len(models)} chosen models have results "
                  f"({n_shards_run} of {args.shards} shards run). The figures below cover only those.", ""]
    lines += [
        "| models checked | passed | failed | errors | gate wall time | throughput |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {c['total']} | {c['passed']} | {c['failed']} | {c['error']} | {wall / 60:.1f} min | "
        f"{(c['total'] / (wall / 60)) if wall else 0:.1f} models/min |",
        "",
        f"Wall time is the sum over the gate runs (each shard with `-n {args.workers}`, plus single reruns), "
        "start-up included; throughput is models checked per minute of it.",
        "",
    ]
    exports = sorted((e for e in merged["models"] if (e.get("timings") or {}).get("export_s")),
                     key=lambda e: -e["timings"]["export_s"])
    if exports:
        lines += ["### Slowest exports", "", "| model | export s | total s | status |", "| --- | ---: | ---: | --- |"]
        for e in exports[:15]:
            t = e["timings"]
            lines.append(f"| `{e['model']}` | {t['export_s']:.1f} | {t.get('total_s', 0):.1f} | {e['status']} |")
        total_export = sum(e["timings"]["export_s"] for e in exports)
        lines += ["", f"Median export: {_median([e['timings']['export_s'] for e in exports]):.1f} s; "
                  f"all exports together: {total_export / 60:.1f} min of worker time.", ""]
    groups = group_reasons(merged)
    entries = {e["model"]: e for e in merged["models"]}
    if groups:
        lines += ["### Errors and failures grouped by cause", "",
                  "`whose` is read off the reason's wording: the exporter's own exception, ONNX Runtime refusing or "
                  "failing to run the file, timm, the gate's inconclusive verdict on ill-conditioned weights, or a "
                  "limit of this sweep (timeout, crash).", "",
                  "| status | models | whose | cause | models |", "| --- | ---: | --- | --- | --- |"]
        for g in groups:
            names = ", ".join(f"`{m}`" for m in g["models"][:12]) + (" …" if len(g["models"]) > 12 else "")
            lines.append(f"| {g['status']} | {len(g['models'])} | {whose_group(g, diag, entries)} | {_cell(g['reason'])} | {names} |")
        lines.append("")
    if alt:
        lines += [f"### Export errors: does `--onnx-parity-exporter {alt['exporter']}` work?", "",
                  f"The models whose `{args.exporter}` export failed, checked again with the other exporter "
                  "(same gate, same checks):", "",
                  "| model | status | max abs diff | reason |", "| --- | --- | ---: | --- |"]
        for m, e in sorted(alt["models"].items()):
            mad = e.get("max_abs_diff")
            why = "" if e["status"] == "passed" else _cell(str(e.get("error") or "failed checks: " + ", ".join(
                c["name"] for c in e.get("checks", []) if c.get("status") in ("failed", "error")))[:200])
            lines.append(f"| `{m}` | {e['status']} | {mad:.2e} | {why} |" if isinstance(mad, float)
                         else f"| `{m}` | {e['status']} | - | {why} |")
        lines.append("")
    failed = [e for e in merged["models"] if e["status"] != "passed" and e.get("checks")]
    if failed:
        lines += ["### Failed checks against a float64 reference", "",
                  "For each model whose checks failed, torch in float32, the same torch model in float64 and ONNX "
                  "Runtime were run on the gate's inputs (`benchmarks/zoo_sweep.py --diagnose-one MODEL`). When ONNX "
                  "Runtime is no farther from float64 than float32 torch itself (within 2x), the difference is float "
                  "rounding amplified by an ill-conditioned network, not an export fault.", "",
                  "| model | failed checks | diagnosis |", "| --- | --- | --- |"]
        for e in failed:
            bad = ", ".join(f"{c['name']} ({c['status']})" for c in e["checks"] if c.get("status") in ("failed", "error"))
            d = diag.get(e["model"])
            lines.append(f"| `{e['model']}` | {bad} | {_cell(verdict(e, d)) if d else 'not diagnosed'} |")
        n_ill = sum(1 for e in failed if e["model"] in diag and verdict(e, diag[e["model"]]).startswith("ill-conditioned"))
        n_real = sum(1 for e in failed if e["model"] in diag and verdict(e, diag[e["model"]]).startswith("real mismatch"))
        lines += ["", f"{n_ill} of {len(failed)} are ill-conditioned under these random weights, {n_real} are real "
                  f"mismatches, {len(failed) - n_ill - n_real} could not be diagnosed.", ""]
        only_real = [e["model"] for e in failed if e["model"] in diag
                     and {c["name"] for c in e["checks"] if c.get("status") in ("failed", "error")} == {"real_images"}
                     and verdict(e, diag[e["model"]]).startswith("ill-conditioned")]
        ours = [e["model"] for e in merged["models"] if any(p in str(e.get("error") or "") for p in OURS)]
        if only_real or ours:
            lines += ["### Problems of ours this sweep shows", ""]
            if only_real:
                lines.append(f"- {len(only_real)} model(s) fail only the real-image check although ONNX Runtime is as close "
                             "to float64 as float32 torch is: that check has no inconclusive verdict for ill-conditioned "
                             "models, as the logits check has: " + ", ".join(f"`{m}`" for m in only_real) + ".")
            if ours:
                lines.append("- The real-image check stops with an internal error when float32 torch itself overflows to "
                             "inf/nan (its tolerance is computed from the logits' RMS, which is then nan): "
                             + ", ".join(f"`{m}`" for m in ours) + ".")
            lines.append("")
    lines += ["## The table", "", render_markdown(merged, title="Compatibility table", heading_level=3).split("\n", 2)[2], ""]
    if sel["left_out"]:
        lines += ["## Families left out", "", "| family | smallest | why |", "| --- | --- | --- |"]
        lines += [f"| {r['family']} | `{r['model']}` | {r['why']} |" for r in sel["left_out"]]
        lines.append("")
    lines += ["## The chosen models", "", "| family | model | parameters | input | variants in family |",
              "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['family']} | `{r['model']}` | {r['params'] / 1e6:.2f}M | {r['input_side']} | {r['variants']} |"
              for r in sel["chosen"]]
    write_block(doc, "zoo-sweep", "\n".join(lines), title=TITLE)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if s else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("zoo-sweep"), help="Working folder (reports, logs, export cache)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "compatibility.md", help="Where to write the document")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per shard (-n)")
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"))
    p.add_argument("--layers", default="never", choices=("always", "on-failure", "never"))
    p.add_argument("--max-params", type=float, default=100e6)
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--limit", type=int, default=0, help="Check only the first N chosen models (a trial run)")
    p.add_argument("--shard-timeout", type=float, default=45 * 60)
    p.add_argument("--model-timeout", type=float, default=15 * 60)
    p.add_argument("--no-diagnose", dest="diagnose", action="store_false",
                   help="Skip the float64 diagnosis of failed models")
    p.add_argument("--max-minutes", type=float, default=0, help="Start no new shard after this much gate time")
    p.add_argument("--code", default=None,
                   help="git revision of the package to run (default: the one the folder started with, else HEAD)")
    p.add_argument("--select-only", action="store_true")
    p.add_argument("--diagnose-one", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--render-only", action="store_true", help="Merge what exists and write the document")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    snapshot(out, args.code)
    # the gate and the diagnosis run the snapshot; merging and rendering use this checkout's report.py
    sys.path.insert(0, CODE["folder"] if args.diagnose_one else str(REPO))
    if args.diagnose_one:
        import warnings

        warnings.filterwarnings("ignore")
        try:
            res = diagnose_one(args.diagnose_one, args.exporter, str(out / "cache"))
        except Exception as exc:  # recorded as the diagnosis
            res = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        print("DIAGNOSIS " + json.dumps(res), flush=True)
        return 0
    print(f"running pytest-onnx-parity {CODE['sha'][:12]} from {CODE['folder']}", flush=True)
    sel = select(out, args.max_params, args.max_side)
    models = [c["model"] for c in sel["chosen"]]
    if args.limit:
        models = models[: args.limit]
    print(f"{len(models)} models chosen from {sel['families']} families; {len(sel['left_out'])} families left out", flush=True)
    if args.select_only:
        print("\n".join(models))
        return 0
    if not args.render_only:
        run_sweep(args, out, models)
    merged = merge_all(out, models)
    diag = diagnose(args, out, merged) if args.diagnose else {}
    alt = other_exporter(args, out, merged) if args.diagnose else {}
    write_doc(args, out, sel, merged, args.doc.resolve(), diag, alt)
    c = merged and {k: v for k, v in __import__("pytest_onnx_parity.report", fromlist=["counts"]).counts(merged).items()}
    print(f"[{_now()}] {c}; wrote {out / 'all.json'}, {out / 'table.html'} and {args.doc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ISSUE.md`` of a reproducer bundle: a bug report ready to paste for the project to blame.

:func:`issue_markdown` words it from the bundle's own ``bundle.json`` content (so the report says
what the bundle holds, nothing else): the title, the environment (python, OS, and the versions of
torch, onnx, onnxruntime, onnxscript, timm), the exporter and opset, the model spec, the module
(its path, torch class, the ONNX op types of its subgraph), the differences, who to blame, and
the commands that reproduce it from the bundle.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["issue_markdown", "platform_info"]

#: where each verdict is reported, for the title
PROJECTS = {"exporter": "torch.onnx", "runtime": "onnxruntime", "simplifier": "the simplifier"}
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "timm", "numpy")


def platform_info() -> dict[str, str]:
    """Python's version and the OS, in the words of :mod:`platform`."""
    import platform

    return {"python": platform.python_version(), "os": platform.platform()}


def issue_markdown(meta: dict[str, Any]) -> str:
    """ISSUE.md from a bundle's ``bundle.json`` content (``meta``)."""
    mod = meta.get("module") or {}
    blame = mod.get("blame") or {}
    verdict = blame.get("verdict")
    exporter, opset = meta.get("exporter"), meta.get("opset")
    where = f"`{mod['module']}`" + (f" ({mod['module_type']})" if mod.get("module_type") else "") if mod.get("module") \
        else "the model"
    if verdict in ("exporter", "runtime", "simplifier"):
        head = {"exporter": f"the {exporter or 'exporter'} ONNX export of {where} computes something else than torch",
                "runtime": f"ONNX Runtime computes the ONNX graph of {where} differently from its meaning",
                "simplifier": f"the simplified ONNX file departs from torch at {where}"}[verdict]
        title = f"[{PROJECTS[verdict]}] {head}"
    else:
        title = f"ONNX export of {meta.get('architecture') or meta.get('model')} departs from torch at {where}"
    lv = blame.get("levels") or {}
    worst = max((s for s in lv.values()), key=lambda s: s.get("max_abs_diff") or 0.0, default={})
    if worst.get("max_abs_diff") is not None and mod.get("module"):
        title += f" (max abs diff {_num(worst['max_abs_diff'])})"
    env = {**(meta.get("platform") or platform_info()), **(meta.get("versions") or {})}
    lines = [f"# {title}", ""]
    if blame:
        lines += ["## Who to blame", "", f"**{verdict}**: {blame.get('reason')}", ""]
    lines += ["## Environment", "", "| | |", "| --- | --- |", f"| python | {env.get('python')} |",
              f"| OS | {env.get('os')} |"]
    lines += [f"| {lib} | {env.get(lib, 'missing')} |" for lib in LIBRARIES]
    lines += ["", "## The model", "", f"- spec: `{meta.get('model')}`",
              f"- exporter: {exporter or 'unknown'}; opset: {opset}",
              f"- weights: {meta.get('weights') or 'unknown'} (seed {meta.get('seed')})",
              f"- failing checks: {', '.join(meta.get('failing_checks') or []) or '-'}"]
    if mod.get("file"):
        lines += ["", *_module(mod)]
    elif mod.get("problem"):
        lines += ["", f"The first divergence is at `{mod.get('module')}`, but the module could not be cut out: "
                  f"{mod['problem']}"]
    else:
        lines += ["", "The per-layer check placed no first divergence, so the bundle has no module subgraph."]
    lines += ["", "## Reproduce", "", "From this folder, on a machine with numpy and onnxruntime "
              "(torch, timm and pytest-onnx-parity are not needed):", "", "```sh",
              "pip install numpy onnxruntime" + (f"=={env['onnxruntime']}" if env.get("onnxruntime", "missing") != "missing"
                                                  else "")]
    if mod.get("file"):
        lines.append("python reproduce.py --module            # the module alone: exits 1 while ONNX Runtime departs")
    if mod.get("reduced"):
        lines.append("python reproduce.py --module --reduced  # its smallest node range that still diverges")
    lines += ["python reproduce.py                     # the whole model's outputs on inputs.npz", "```", ""]
    lines += ["Files: " + ", ".join(f"`{f}`" for f in meta.get("files", [])), ""]
    return "\n".join(lines)


def _module(mod: dict[str, Any]) -> list[str]:
    blame = mod.get("blame") or {}
    fused = f"; it includes {', '.join(f'`{m}`' for m in mod['fused'])}, fused by the exporter" if mod.get("fused") else ""
    out = ["## The divergent module", "",
           f"- module path: `{mod['module']}`, torch class `{mod.get('module_type')}`{fused}",
           f"- ONNX subgraph (`{mod.get('file', 'not written')}`): {mod.get('nodes')} of the file's "
           f"{mod.get('file_nodes')} nodes; op types: {', '.join(mod.get('ops') or [])}"]
    for i in mod.get("inputs") or []:
        if isinstance(i, dict) and "name" in i:
            out.append(f"- input `{i['name']}` {tuple(i['shape'])}: {i['source']}")
    out.append(f"- tolerance: max abs diff <= {mod.get('atol'):g} + {mod.get('rtol'):g} x RMS of torch's output")
    out += ["", "| run alone on torch's inputs | max abs diff | relative (x RMS of torch's output) | allowed | |",
            "| --- | --- | --- | --- | --- |"]
    for level, s in (blame.get("levels") or {}).items():
        out.append(f"| ONNX Runtime, optimisation {level} | {_num(s['max_abs_diff'])} | {_num(s['max_rel_diff'])} | "
                   f"{_num(s['tolerance'])} | {'ok' if s['passed'] else 'differs'} |")
    ref = blame.get("reference") or {}
    if "vs_torch" in ref:
        s = ref["vs_torch"]
        out.append(f"| ONNX reference evaluator (onnx.reference) | {_num(s['max_abs_diff'])} | "
                   f"{_num(s['max_rel_diff'])} | {_num(s['tolerance'])} | {'ok' if s['passed'] else 'differs'} |")
        out += ["", f"The reference evaluator against ONNX Runtime (no optimisation): max abs diff "
                f"{_num(ref['vs_onnxruntime']['max_abs_diff'])}."]
    elif "error" in ref:
        out += ["", f"The reference evaluator could not run the subgraph: {ref['error']}"]
    red = mod.get("reduced")
    if red:
        judged = "torch's values" if red.get("judged_by") == "torch" else "ONNX's reference evaluator"
        out += ["", f"Reduced (bisection, then a linear pass) to {red['nodes']} of the module's {red['of_nodes']} "
                f"nodes ({', '.join(red['ops'])}), in {', '.join(red.get('modules') or red.get('node_modules') or [])}: "
                f"`{red.get('file', 'module_reduced.onnx')}`, judged against {judged} (max abs diff "
                f"{_num(red['measured']['max_abs_diff'])}, allowed {_num(red['measured']['tolerance'])})."]
    return out


def _num(x: Any) -> str:
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return str(v) if not math.isfinite(v) else f"{v:.3g}"

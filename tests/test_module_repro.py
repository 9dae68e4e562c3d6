"""The divergent module cut out as a standalone reproducer (issue 20, points 1-4): the module's ONNX subgraph
with torch's values, ``reproduce.py --module`` without torch or the plugin, the reduction of a large module,
who to blame, and ISSUE.md.

The two planted faults of the issue: a 1.5x weight in resnet18's ``layer3.0.conv2`` (TorchScript export)
and a wrong LayerNorm epsilon in ``blocks.2.norm1`` of timm's tiny ``test_vit`` (dynamo export), each gated
as ``NAME=random@FILE``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import onnx
import onnxruntime
import pytest

from pytest_onnx_parity import compare_layers, export_onnx, load_model
from pytest_onnx_parity.layers.blame import decide
from pytest_onnx_parity.layers.repro import isolate_divergence

VIT_EPSILON = 0.1  # the file's LayerNorm epsilon in blocks.2.norm1; torch's is 1e-6


@pytest.fixture(scope="module")
def faults(export_cache: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """name -> (model, clean file, faulty file, the module the fault is in)."""
    import torch  # noqa: F401  (loaded before any in-process run)

    from pytest_onnx_parity.testing import scale_layer_weights

    folder = tmp_path_factory.mktemp("faults")
    out = {}
    resnet = load_model("resnet18")
    clean = export_onnx(resnet, exporter="torchscript", cache_dir=export_cache).path
    onnx.save(scale_layer_weights(resnet, clean, "layer3.0.conv2", 1.5), str(folder / "resnet18_bad.onnx"))
    out["resnet18"] = (resnet, clean, folder / "resnet18_bad.onnx", "layer3.0.bn2")
    vit = load_model("test_vit")
    clean = export_onnx(vit, exporter="dynamo", cache_dir=export_cache).path
    proto = onnx.load(str(clean))
    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization" and "blocks.2.norm1" in str(n.metadata_props)]
    assert len(norms) == 1
    next(a for a in norms[0].attribute if a.name == "epsilon").f = VIT_EPSILON
    onnx.save(proto, str(folder / "test_vit_bad.onnx"))
    out["test_vit"] = (vit, clean, folder / "test_vit_bad.onnx", "blocks.2.norm1")
    return out


def _batch(model: Any) -> numpy.ndarray:
    from pytest_onnx_parity.preprocessing.dataconfig import resolve_data_config
    from pytest_onnx_parity.runtime.forward import random_batch

    return random_batch(resolve_data_config(model), 1, 0)


def clean_python(*args: str) -> list[str]:
    """An interpreter that can import numpy and onnxruntime and nothing of torch, timm, onnx or the plugin:
    no site processing (so no editable install), their site-packages on the path, the others blocked."""
    paths = sorted({str(Path(numpy.__file__).parents[1]), str(Path(onnxruntime.__file__).parents[1])})
    blocked = ("torch", "timm", "onnx", "pytest_onnx_parity")
    boot = (f"import sys; sys.path[:0] = {paths!r}; sys.modules.update(dict.fromkeys({blocked!r})); "
            "sys.argv = ['reproduce.py', *sys.argv[1:]]; import runpy; runpy.run_path('reproduce.py', run_name='__main__')")
    return [sys.executable, "-I", "-S", "-c", boot, *args]


def reproduce(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(clean_python(*args), cwd=bundle, capture_output=True, text=True, check=False, timeout=120)


# -- the Done-when cases: gated as NAME=random@FILE ------------------------------------------------------------


@pytest.mark.parametrize("name,exporter,opset", [("resnet18", "torchscript", 20), ("test_vit", "dynamo", 20)])
def test_gated_fault_gives_a_module_bundle_that_reproduces_without_torch(
        pytester: pytest.Pytester, faults: dict[str, Any], name: str, exporter: str, opset: int) -> None:
    model, _, bad, module = faults[name]
    art = pytester.path / "artifacts"
    result = pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider", "--onnx-parity",
                                f"--onnx-parity-models={name}=random@{bad}", f"--onnx-parity-artifacts={art}",
                                f"--onnx-parity-cache-dir={pytester.path / 'cache'}")
    result.assert_outcomes(failed=1)
    (bundle,) = [p for p in art.iterdir() if p.is_dir()]
    layers = next(c for c in json.loads((bundle / "result.json").read_text())["checks"] if c["name"] == "layers")
    # the report says it: the layers check's details (the JSON entry) and its message (the gate's failure text,
    # which leads with the weights check instead when the file's weights differ, as resnet18's do here)
    assert layers["blame"] == "exporter" and layers["module_repro"]["module"] == module
    assert layers["module_repro"]["blame"]["line"].startswith("who to blame: exporter")
    if name == "test_vit":
        assert "who to blame: exporter" in "\n".join(result.outlines)
    meta = json.loads((bundle / "bundle.json").read_text())
    mod = meta["module"]
    assert mod["module"] == module and meta["problems"] == []
    cut = onnx.load(str(bundle / "module.onnx"))
    whole = onnx.load(str(bundle / "model.onnx"))
    assert len(cut.graph.node) == mod["nodes"] <= max(8, len(whole.graph.node) // 10)
    # boundary values are graph inputs, weights are initializers (only those it uses), never both
    inits = {t.name for t in cut.graph.initializer}
    assert inits and not inits & {i.name for i in cut.graph.input}
    used = {v for n in cut.graph.node for v in n.input}
    assert inits <= used
    assert mod["blame"]["verdict"] == "exporter" and mod["blame"]["line"].startswith("who to blame: exporter")
    assert all(i["source"].startswith("torch") for i in mod["inputs"])
    issue = (bundle / "ISSUE.md").read_text()
    for must in (meta["versions"]["torch"], meta["versions"]["onnxruntime"], meta["versions"]["onnx"],
                 meta["versions"]["onnxscript"], meta["versions"]["timm"], f"exporter: {exporter}; opset: {opset}",
                 f"`{module}`", "**exporter**", "python reproduce.py --module", f"{name}=random@"):
        assert must in issue, must
    assert "| python |" in issue and "| OS |" in issue

    run = reproduce(bundle, "--module")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"module:  {module} (" in run.stdout and "MISMATCH" in run.stdout
    assert "who to blame: exporter" in run.stdout

    # a runtime that computed what torch computes: the same subgraph with torch's outputs replaced by the
    # values ONNX Runtime gives on it: the script now exits 0
    fixed = pytester.path / "fixed"
    shutil.copytree(bundle, fixed)
    io = dict(numpy.load(fixed / "module_io.npz"))
    sess = onnxruntime.InferenceSession(str(fixed / "module.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i["name"]: io[i["key"]] for i in mod["inputs"]}
    for o, got in zip(mod["outputs"], sess.run([o["name"] for o in mod["outputs"]], feeds), strict=True):
        io[o["key"]] = got
    numpy.savez(fixed / "module_io.npz", **io)
    run = reproduce(fixed, "--module")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK:" in run.stdout and module in run.stdout


def test_the_shipped_reproducer_runs_where_torch_and_the_plugin_cannot_be_imported(tmp_path: Path) -> None:
    """The package's own reproduce.py (what every bundle carries) starts and parses its options in the interpreter
    the bundle tests use, where torch, timm, onnx and the plugin cannot be imported: a top-level import of any of
    them fails here. The probe first shows that interpreter really blocks them."""
    from pytest_onnx_parity import reproduce as shipped

    probe = ("import numpy, onnxruntime\nfor m in ('torch', 'timm', 'onnx', 'pytest_onnx_parity'):\n"
             "    try:\n        __import__(m)\n    except ImportError:\n        print('blocked', m)\n")
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "reproduce.py").write_text(probe)
    run = reproduce(tmp_path / "probe")
    assert run.stdout.split("\n")[:4] == ["blocked torch", "blocked timm", "blocked onnx", "blocked pytest_onnx_parity"]
    shutil.copy(shipped.__file__, tmp_path / "reproduce.py")
    run = reproduce(tmp_path, "--help")
    assert run.returncode == 0, run.stderr
    assert "--module" in run.stdout


# -- smaller still: a whole block or stage reduced ---------------------------------------------------------------


@pytest.mark.parametrize("name,container,node,ops", [("resnet18", "layer3", "layer3.0.conv2", ["Conv"]),
                                                      ("test_vit", "blocks.2", "blocks.2.norm1", ["LayerNormalization"])])
def test_a_large_module_is_reduced_to_the_node_that_diverges(faults: dict[str, Any], name: str, container: str,
                                                             node: str, ops: list[str]) -> None:
    model, _, bad, _ = faults[name]
    x = _batch(model)
    cmp = compare_layers(model, bad, x)
    iso = isolate_divergence(model, bad, x, cmp, layer=container)
    assert iso.cut.module == container and iso.cut.nodes > 8
    assert iso.blame.verdict == "exporter"
    r = iso.reduction
    assert r is not None and r.judged_by == "torch"
    assert r.nodes == 1 and list(r.ops) == ops and r.node_modules == [node]
    assert not r.measured["passed"] and r.runs <= 16
    assert set(r.inputs) <= set(iso.cut.anchors)  # fed torch's values only


class _LayerNormWithTorchsEpsilon:
    """A reference evaluator's LayerNormalization that ignores the file's epsilon (uses torch's 1e-6): it plays
    a reference that agrees with torch while ONNX Runtime runs the file as written, i.e. a runtime at fault."""

    @staticmethod
    def make() -> type:
        from onnx.reference.op_run import OpRun

        class LayerNormalization(OpRun):
            op_domain = ""

            def _run(self, X, Scale, B=None, axis=None, epsilon=None, stash_type=None):  # noqa: N803
                ax = -1 if axis is None else axis
                mean = X.mean(axis=ax, keepdims=True)
                var = ((X - mean) ** 2).mean(axis=ax, keepdims=True)
                return (((X - mean) / numpy.sqrt(var + 1e-6) * Scale + (0 if B is None else B)).astype(X.dtype),)

        return LayerNormalization


def test_a_reference_that_agrees_with_torch_blames_the_runtime_and_reduces_against_it(faults: dict[str, Any]) -> None:
    model, _, bad, _ = faults["test_vit"]
    x = _batch(model)
    cmp = compare_layers(model, bad, x)
    iso = isolate_divergence(model, bad, x, cmp, layer="blocks.2", new_ops=[_LayerNormWithTorchsEpsilon.make()])
    assert iso.blame.verdict == "runtime" and "reference evaluator agrees with torch" in iso.blame.reason
    r = iso.reduction
    assert r is not None and r.judged_by == "reference" and r.node_modules == ["blocks.2.norm1"]


def test_an_unsimplified_file_that_passes_blames_the_simplifier(faults: dict[str, Any]) -> None:
    model, clean, bad, _ = faults["test_vit"]
    x = _batch(model)
    iso = isolate_divergence(model, bad, x, compare_layers(model, bad, x), unsimplified=clean)
    assert iso.blame.verdict == "simplifier" and iso.blame.unsimplified["passed"]
    again = isolate_divergence(model, bad, x, compare_layers(model, bad, x), unsimplified=bad)
    assert again.blame.verdict == "exporter"


def _lv(*passed: bool, diff: float = 1.0) -> dict[str, dict[str, Any]]:
    return {lv: {"passed": p, "max_abs_diff": 0.0 if p else diff} for lv, p in zip(("disabled", "basic", "extended", "all"),
                                                                                 passed, strict=True)}


def test_the_blame_rule() -> None:
    same = {"passed": True, "max_abs_diff": 0.0}
    ref_ort = {"vs_torch": {"passed": False, "max_abs_diff": 1.0}, "vs_onnxruntime": {"passed": True, "max_abs_diff": 0.0}}
    ref_torch = {"vs_torch": {"passed": True, "max_abs_diff": 0.0}, "vs_onnxruntime": {"passed": False, "max_abs_diff": 1.0}}
    assert decide(_lv(False, False, False, False), same, ref_ort, exporter="dynamo")[0] == "exporter"
    assert decide(_lv(True, True, True, False), same, ref_ort)[0] == "runtime"  # the levels disagree
    assert decide(_lv(False, False, False, False), {"passed": False, "max_abs_diff": 2.0, "levels": "disabled and all"},
                  ref_ort)[0] == "runtime"
    assert decide(_lv(False, False, False, False), same, ref_torch)[0] == "runtime"  # the reference agrees with torch
    assert decide(_lv(True, True, True, True), same, ref_ort)[0] == "undetermined"  # agrees when run alone
    assert decide(_lv(False, False, False, False), same, {"error": "no kernel"})[0] == "undetermined"
    assert decide(_lv(False, False, False, False), same, ref_ort, {"passed": True, "how": "x"})[0] == "simplifier"
    assert decide(_lv(False, False, False, False), same, ref_ort, {"passed": False, "how": "x"})[0] == "exporter"


# -- the cut itself -------------------------------------------------------------------------------------------


def test_a_file_with_external_data_is_cut_with_only_the_weights_the_module_uses(faults: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    from pytest_onnx_parity.layers.isolate import cut_module
    from pytest_onnx_parity.onnxfile.io import save_onnx

    model, _, bad, _ = faults["test_vit"]
    ext = save_onnx(onnx.load(str(bad)), tmp_path / "ext.onnx", external=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    x = _batch(model)
    cmp = compare_layers(model, ext, x)
    cut = cut_module(model, ext, x, cmp)
    assert cut.module == "blocks.2.norm1" and list(cut.ops) == ["LayerNormalization"]
    assert sorted(t.name for t in cut.proto.graph.initializer) == ["blocks.2.norm1.bias", "blocks.2.norm1.weight"]
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in cut.proto.graph.initializer)
    onnx.checker.check_model(cut.proto)


def test_reproduce_module_reduced_runs_the_smallest_range(faults: dict[str, Any], tmp_path: Path) -> None:
    from pytest_onnx_parity.report.bundle import write_bundle
    from pytest_onnx_parity.run import ParityRun

    model, _, bad, _ = faults["test_vit"]
    with ParityRun(model, onnx=bad) as run:
        run.execute()
        check = run.result.check("layers")
        check.isolation = isolate_divergence(model, bad, run.inputs[:1], run.result.layer_comparison, layer="blocks.2")
        bundle = write_bundle(run, tmp_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["module"]["module"] == "blocks.2" and meta["module"]["reduced"]["nodes"] == 1
    assert (bundle / "module_reduced.onnx").is_file() and "--module --reduced" in (bundle / "ISSUE.md").read_text()
    run_ = reproduce(bundle, "--module", "--reduced")
    assert run_.returncode == 1, run_.stdout + run_.stderr
    assert "reduced from the module's" in run_.stdout and "blocks.2.norm1" in run_.stdout


def test_a_bundle_without_a_divergence_has_no_module_part_and_says_so(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_onnx_parity.report.bundle import write_bundle

    result = SimpleNamespace(model="m", status="failed", exporter=None, opset=None, weights="random", checks=[],
                             check=lambda name: None, to_dict=lambda: {"model": "m"}, layer_comparison=None)
    out = write_bundle(SimpleNamespace(result=result, model=None, export=None, options=None, inputs=None), tmp_path)
    assert json.loads((out / "bundle.json").read_text())["module"] is None
    assert "no module subgraph" in (out / "ISSUE.md").read_text() and not (out / "module.onnx").exists()
    run = reproduce(out, "--module")
    assert run.returncode == 2 and "no module subgraph" in run.stdout

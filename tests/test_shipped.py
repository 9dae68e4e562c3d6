"""Files made elsewhere: ``NAME[=WEIGHTS]@FILE.onnx``, ``stamp_onnx``, ``onnx-parity check``, files as they come.

The files are made the way teams make them: ``timm.utils.onnx.onnx_export`` and a plain
``torch.onnx.export(..., dynamo=False)`` with batch 1, from a saved safetensors checkpoint
(timm's tiny ``test_vit`` at 160 px), once per module.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_onnx_parity.errors import OnnxFileError, SpecError, WeightsError
from pytest_onnx_parity.specs import parse_spec

NAME = "test_vit"
SCALED = "blocks.0.mlp.fc1.weight"
FAST = {"layers": "never"}


@pytest.fixture(autouse=True, scope="module")
def _preload_heavy_libraries() -> None:
    """pytester runs in-process: torch and onnxruntime must be imported out here first."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401


def _fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _export(module: Any, x: Any, path: Path, **kwargs: Any) -> Path:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, **kwargs)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint and the files a team's pipeline makes from it (made once per module)."""
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.utils.onnx import onnx_export

    out = tmp_path_factory.mktemp("shipped")
    torch.manual_seed(1)
    model = timm.create_model(NAME, pretrained=False).eval()
    with torch.no_grad():  # timm zero-inits the head: give it weights so that the logits can differ
        model.head.weight.normal_(0, 0.5)
        model.head.bias.normal_(0, 0.5)
    save_file(model.state_dict(), str(out / "ckpt.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export(model, str(out / "timm.onnx"), input_size=(3, 160, 160), batch_size=1)
    x = torch.randn(1, 3, 160, 160)
    _export(model, x, out / "plain.onnx")

    class NHWC(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x.permute(0, 3, 1, 2))

    class Half(NHWC):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x.float())

    class Two(NHWC):  # features first, logits second
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.m.forward_head(self.m.forward_features(x), pre_logits=True)
            return f, self.m.head(f)

    _export(NHWC(model), x.permute(0, 2, 3, 1), out / "nhwc.onnx", input_names=["pixels"])
    _export(Half(model), x.half(), out / "half.onnx", input_names=["images"])
    _export(Two(model), x, out / "two.onnx", output_names=["features", "scores"])
    _export(Two(model), x, out / "two_same.onnx", output_names=["a", "b"])
    import copy

    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.get_parameter(SCALED).mul_(1.05)  # one layer's weights changed by 5%
    _export(scaled, x, out / "scaled.onnx")
    torch.manual_seed(2)  # a file of another model, timm's own init (its all-ones and zero tensors included)
    _export(timm.create_model("test_resnet", pretrained=False).eval(), x, out / "other_model.onnx")
    return {p.stem: p for p in out.iterdir()}


# -- specs -------------------------------------------------------------------------------------------


def test_at_file_specs_parse_after_the_last_at() -> None:
    s = parse_spec("resnet18=/ckpt/a@b/w.safetensors@out/model.onnx")
    assert (s.name, s.weights, s.onnx_file) == ("resnet18", "/ckpt/a@b/w.safetensors", "out/model.onnx")
    s = parse_spec("resnet18@model.ONNX", default_weights="pretrained")
    assert (s.weights, s.onnx_file, s.text) == ("pretrained", "model.ONNX", "resnet18@model.ONNX")
    assert parse_spec("resnet18=random").onnx_file is None
    assert parse_spec("hf-hub:org/repo@main").onnx_file is None  # a hub revision, not a file


@pytest.mark.parametrize("text,needle", [
    ("resnet18@model.pt", "not an ONNX file"),
    ("resnet18=random@", "not an ONNX file"),
    ("@model.onnx", "no model name"),
])
def test_bad_at_specs_name_the_fix(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle) as info:
        parse_spec(text)
    assert "NAME[=WEIGHTS]@" in str(info.value)


def test_resolve_data_config_takes_a_pretrained_name_without_weights(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    import timm
    import timm.models._builder as builder

    from pytest_onnx_parity import resolve_data_config

    def no_download(*a: Any, **k: Any) -> None:
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(builder, "load_pretrained", no_download)
    cfg = resolve_data_config("vit_small_patch16_224.augreg_in21k_ft_in1k")
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["input_size"]) == (0.9, "bicubic", [3, 224, 224])
    assert resolve_data_config("resnet50.a1_in1k")["crop_pct"] == 0.95
    # a checkpoint is read for its training args (a timm train.py checkpoint's; docs/own-model.md): one without
    # them keeps the name's config, a missing one is the clear error of the gate's up-front check
    from safetensors.torch import save_file

    ckpt = tmp_path / "r50.safetensors"
    save_file(timm.create_model("resnet50", num_classes=5).state_dict(), str(ckpt))
    assert resolve_data_config(f"resnet50.a1_in1k={ckpt}@f.onnx") == resolve_data_config("resnet50.a1_in1k")
    with pytest.raises(WeightsError, match="checkpoint file not found"):
        resolve_data_config("resnet50.a1_in1k=/x.safetensors@f.onnx")


# -- files as they come --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["timm", "plain"])
def test_before_stamping_only_data_config_fails_and_names_the_stamp_command(files: dict[str, Path], kind: str) -> None:
    from pytest_onnx_parity import check_parity

    path = files[kind]
    before = _fingerprint(path)
    r = check_parity(f"{NAME}={files['ckpt']}", onnx=path)
    statuses = {c.name: c.status for c in r.checks}
    assert r.status == "failed" and [n for n, s in statuses.items() if s == "failed"] == ["data_config"], statuses
    assert statuses["logits"] == statuses["topk"] == "passed" and statuses["layers"] == "passed"
    assert r.checks[0].name == "weights" and statuses["weights"] == "passed", r.checks[0].message
    msg = r.check("data_config").message
    assert f"onnx-parity stamp {path} --model {NAME}" in msg and "stamp_onnx" in msg
    assert "pretrained config" in msg  # where the data config comes from
    assert statuses["real_images"] == "skipped"
    assert r.onnx_path == str(path) and _fingerprint(path) == before  # read, never written
    if kind == "plain":  # batch fixed at 1: run at that batch, batch_consistency skipped naming it
        batch = r.check("batch_consistency")
        assert batch.status == "skipped" and "batch fixed at 1 in the file" in batch.message
        assert r.check("logits").details["batch"] == 2  # two samples, run one at a time
    json.dumps(r.to_dict())
    assert "INVALID_ARGUMENT" not in json.dumps(r.to_dict())


@pytest.mark.parametrize("kind", ["nhwc", "half", "two"])
def test_nhwc_float16_and_several_outputs_are_run_as_they_come(files: dict[str, Path], kind: str) -> None:
    from pytest_onnx_parity import check_parity

    r = check_parity(f"{NAME}={files['ckpt']}", onnx=files[kind], **FAST)
    assert r.check("logits").status == "passed", r.check("logits").message
    assert r.check("topk").status == "passed"


def test_a_file_with_two_logit_like_outputs_asks_which_to_use(files: dict[str, Path]) -> None:
    from pytest_onnx_parity import check_parity

    r = check_parity(f"{NAME}={files['ckpt']}", onnx=files["two_same"], **FAST)
    # (N, 64) features and (N, 1000) logits: the shape picks the logits
    assert r.check("logits").status == "passed"
    wrong = check_parity(f"{NAME}={files['ckpt']}", onnx=files["two_same"], output="a", **FAST)
    logits = wrong.check("logits")
    assert logits.status == "error" and "gives shape (2, 64)" in logits.message and "--onnx-parity-output" in logits.message
    missing = check_parity(f"{NAME}={files['ckpt']}", onnx=files["two_same"], output="nope", **FAST)
    assert missing.status == "error" and "has no output 'nope'" in missing.error and "'a'" in missing.error


def test_outputs_that_shape_cannot_tell_apart_ask_for_a_name() -> None:
    from types import SimpleNamespace

    from pytest_onnx_parity.runtime.forward import logits_output

    def session(*shapes: list[Any]) -> Any:
        outs = [SimpleNamespace(name=f"o{i}", shape=s) for i, s in enumerate(shapes)]
        return SimpleNamespace(get_outputs=lambda: outs)

    assert logits_output(session(["N", 64], ["N", 1000]), 1000) == "o1"
    assert logits_output(session(["N", 7, 64], ["N", 1000])) == "o1"
    assert logits_output(session(["N", 1000], ["N", 1000]), 1000, name="o1") == "o1"
    with pytest.raises(OnnxFileError, match="none is clearly the logits .N, 1000.*--onnx-parity-output"):
        logits_output(session(["N", 1000], ["N", 1000]), 1000)
    with pytest.raises(OnnxFileError, match="none is clearly"):
        logits_output(session(["N", 7, 64], ["N", 3, 3]))


def test_random_weights_against_a_shipped_file_fail_weights_naming_the_fix(files: dict[str, Path]) -> None:
    """The seed failure: the file holds the checkpoint's weights, the spec asks for random ones."""
    from pytest_onnx_parity import check_parity

    r = check_parity(f"{NAME}=random", onnx=files["plain"], **FAST)
    weights = r.checks[0]
    assert weights.name == "weights" and weights.status == "failed"
    assert "NAME=pretrained" in weights.message and "NAME=/path/to/checkpoint" in weights.message
    assert r.check("logits").status == "failed" and r.check("logits").message.startswith("The weights check failed")
    summary = r.failure_message()
    assert summary.splitlines()[0].startswith(f"{NAME}=random@{files['plain']}: the ONNX file's weights differ")
    assert summary.index("--- weights ---") < summary.index("\nlogits: ")  # one line per other failed check


def test_one_layer_changed_by_5_percent_fails_weights_naming_it(files: dict[str, Path]) -> None:
    from pytest_onnx_parity import check_parity

    r = check_parity(f"{NAME}={files['ckpt']}", onnx=files["scaled"], **FAST)
    weights = r.checks[0]
    assert weights.status == "failed" and f"First differing weight: {SCALED}" in weights.message
    assert [d["name"] for d in weights.details["differing"]] == [SCALED]


def test_a_file_of_another_model_fails_leading_with_the_wrong_model(files: dict[str, Path],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """resnet's file checked against the ViT checkpoint: not "data_config failed, stamp it", but "not this model"."""
    from pytest_onnx_parity import check_parity
    from pytest_onnx_parity.__main__ import main

    spec = f"{NAME}={files['ckpt']}"
    r = check_parity(spec, onnx=files["other_model"], **FAST)
    weights = r.checks[0]
    assert weights.name == "weights" and weights.status == "failed" and weights.details["other_model"]
    assert weights.message.startswith(f"this file does not hold {NAME}'s weights: 0 of its {weights.details['total']} "
                                      "weights matched")
    assert f"{weights.details['file_kernels']} float weight tensors of its own" in weights.message
    assert "the model it was exported from" in weights.message and f"{NAME}=/path/to/checkpoint" in weights.message
    assert r.status == "failed"
    summary = r.failure_message()
    assert summary.startswith(f"this file does not hold {NAME}'s weights ({spec}@{files['other_model']}: weights failed")
    assert summary.find("onnx-parity stamp") == -1 or summary.index("onnx-parity stamp") > summary.index("--- weights ---")
    # the shell: exit 1, and the message after the progress line starts with the diagnosis
    capsys.readouterr()
    assert main(["check", str(files["other_model"]), "--model", spec, "--layers", "never"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("onnx-parity check: ") and err[1].startswith(f"this file does not hold {NAME}'s weights")


def test_a_wrong_checkpoint_prints_the_weights_and_one_line_per_other_check(files: dict[str, Path]) -> None:
    """Once the weights failed, the behaviour checks' full messages (the per-layer table too) stay in the JSON."""
    from pytest_onnx_parity import check_parity

    r = check_parity(f"{NAME}=random", onnx=files["plain"])  # the per-layer check runs (on failure)
    layers = r.check("layers")
    assert layers.status == "failed" and len(layers.message.splitlines()) > 20  # its table, in the JSON entry
    lines = r.failure_message().splitlines()
    assert len(lines) <= 30, "\n".join(lines)  # 109 lines before (test_vit; 157 on vit_tiny_patch16_224)
    assert [ln.split(":")[0] for ln in lines[lines.index(next(ln for ln in lines if ln.startswith("--- then"))) + 1:]] == [
        c.name for c in r.checks if c.status == "failed" and c.name != "weights"]
    assert any(ln.startswith("layers: first divergence at ") for ln in lines)


def _no_image_input(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 16])
    graph = helper.make_graph([helper.make_node("Identity", ["tokens"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bad_files_give_clear_messages(files: dict[str, Path], tmp_path: Path) -> None:
    from pytest_onnx_parity import check_parity

    ckpt = files["ckpt"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a protobuf" * 10)
    cases = {
        tmp_path / "missing.onnx": "ONNX file not found",
        ckpt: "not an ONNX file (expected a file ending in .onnx)",
        garbage: "is not a readable ONNX file",
        _no_image_input(tmp_path / "tokens.onnx"): "no image-like input: its input is 'tokens'",
    }
    for path, needle in cases.items():
        r = check_parity(f"{NAME}={ckpt}", onnx=path, **FAST)
        assert r.status == "error" and needle in r.error, (path, r.error)
    other = check_parity(f"test_resnet={ckpt}", onnx=files["plain"], **FAST)
    # the keys that do not fit, never the advice to use random weights (they can never match a file)
    assert other.status == "error" and "does not fit test_resnet" in other.error and "missing from the checkpoint" in other.error
    assert "=random" not in other.error


# -- stamp and check --------------------------------------------------------------------------------


def test_stamp_then_check_from_the_shell(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_onnx_parity import read_data_config, resolve_data_config, stamp_onnx
    from pytest_onnx_parity.__main__ import main
    from pytest_onnx_parity.onnxfile.metadata import read_provenance

    src = files["plain"]
    before = _fingerprint(src)
    out = stamp_onnx(src, f"{NAME}={files['ckpt']}", output=tmp_path / "stamped.onnx")
    assert _fingerprint(src) == before
    assert read_data_config(out) == resolve_data_config(NAME)
    prov = read_provenance(out)
    assert prov["model"] == NAME and prov["weights"].startswith("ckpt.safetensors sha256:") and prov["stamped"]

    report = tmp_path / "r.json"
    assert main(["check", str(out), "--model", f"{NAME}={files['ckpt']}", "--report", str(report), "--layers", "never"]) == 0
    text = capsys.readouterr().out
    assert "model" in text and "passed" in text and "max abs diff" in text
    entry = json.loads(report.read_text())["models"][0]
    assert entry["status"] == "passed" and entry["onnx_path"] == str(out.resolve())
    assert entry["model"] == f"{NAME}={files['ckpt']}@{out}"
    assert entry["checks"][0]["name"] == "weights" and entry["checks"][0]["status"] == "passed"

    # unstamped: fails (1); usage errors (2) are known before running; a wrong checkpoint cannot be checked (3)
    assert main(["check", str(src), "--model", f"{NAME}={files['ckpt']}", "--onnx-parity-layers", "never"]) == 1
    assert "onnx-parity stamp" in capsys.readouterr().err
    for argv, needle in [
        (["check", str(tmp_path / "no.onnx"), "--model", NAME], "ONNX file not found"),
        (["check", str(files["ckpt"]), "--model", NAME], "not an ONNX file"),
        (["check", str(out), "--model", "no_such_net"], "timm has no model"),
        (["check", str(out), "--model", NAME, "--atol", "1"], "give atol and rtol together"),
        (["check", str(out), "--model", f"{NAME}@x.onnx"], "not as @FILE"),
        (["stamp", str(tmp_path / "no.onnx"), "--model", NAME], "ONNX file not found"),
    ]:
        assert main(argv) == 2, argv
        assert needle in capsys.readouterr().err, argv
    assert main(["check", str(out), "--model", f"test_resnet={files['ckpt']}", "--layers", "never"]) == 3
    assert "missing from the checkpoint" in capsys.readouterr().err


def test_stamp_in_place_keeps_other_metadata(files: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    from pytest_onnx_parity import read_data_config, stamp_onnx

    path = tmp_path / "m.onnx"
    shutil.copyfile(files["timm"], path)
    proto = onnx.load(str(path))
    proto.metadata_props.add(key="team.version", value="7")
    onnx.save(proto, str(path))
    # another model's config (224 px on a file fixed at 160): refused unless forced, which this test needs
    assert stamp_onnx(path, "vit_small_patch16_224.augreg_in21k_ft_in1k", force=True) == path
    assert read_data_config(path)["crop_pct"] == 0.9
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["team.version"] == "7"


# -- refused up front: the same in the shell (exit 2) and the gate (exit 4) ----------------------------


def test_files_that_cannot_be_checked_are_usage_errors_in_the_shell_and_the_gate(
        pytester: pytest.Pytester, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_onnx_parity.__main__ import main

    data, ckpt = files["plain"].read_bytes(), files["ckpt"].read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "cut.safetensors").write_bytes(ckpt[: len(ckpt) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    good = f"{NAME}={files['ckpt']}"
    cases = [
        (good, tmp_path / "cut.onnx", "cut.onnx is not a readable ONNX file (DecodeError"),
        (good, tmp_path / "empty.onnx", "empty.onnx holds no ONNX model (it is empty, or not an ONNX file)"),
        (f"{NAME}={tmp_path / 'cut.safetensors'}", files["plain"], f"is truncated ({len(ckpt) // 2} bytes; its header"),
        (f"{NAME}={tmp_path / 'empty.pth'}", files["plain"], "') is empty. Pass an existing .safetensors/.pth/.pth.tar/.bin file"),
        (f"{NAME}={tmp_path / 'no.safetensors'}", files["plain"], f"checkpoint file not found: {tmp_path / 'no.safetensors'}"),
        ("test_vitt=random", files["plain"], "timm has no model 'test_vitt'. Did you mean: test_vit"),
    ]
    for model, onnx_file, needle in cases:
        assert main(["check", str(onnx_file), "--model", model, "--layers", "never"]) == 2, (model, onnx_file)
        err = capsys.readouterr().err
        assert needle in err, err
        result = pytester.runpytest(*GATE, f"--onnx-parity-models={model}@{onnx_file}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (model, onnx_file)
        assert needle in result.stderr.str(), result.stderr.str()
    # a given file is only read: re-exporting it is the fix, not the cache (which never held it)
    assert main(["check", str(tmp_path / "cut.onnx"), "--model", good]) == 2
    err = capsys.readouterr().err
    assert "Re-export it: this file is only read here" in err and "cache" not in err


def test_a_missing_checkpoint_is_a_usage_error_before_torch_from_the_shell(files: dict[str, Path], tmp_path: Path) -> None:
    """Refused before torch and timm are imported (so within a second or so: benchmarks/usage_error_time.py measures
    it into docs/performance.md; no wall time is asserted here, another job on the machine would move it)."""
    import subprocess
    import sys

    missing = tmp_path / "no.safetensors"
    run = subprocess.run([sys.executable, "-m", "pytest_onnx_parity", "check", str(files["plain"]), "--model",
                          f"{NAME}={missing}"], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2, run.stderr
    assert f"onnx-parity check: error: checkpoint file not found: {missing}" in run.stderr
    code = ("import sys; from pytest_onnx_parity.__main__ import main; "
            f"rc = main(['check', {str(files['plain'])!r}, '--model', {f'{NAME}={missing}'!r}]); "
            "print('torch' in sys.modules, 'timm' in sys.modules); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2 and run.stdout.split() == ["False", "False"], (run.stdout, run.stderr)


def test_an_unreadable_file_is_told_what_rebuilds_it(tmp_path: Path) -> None:
    """"delete it so that the cache rebuilds it" is right for a cache entry only; a file given to check is re-exported."""
    from pytest_onnx_parity.onnxfile.io import load_onnx_proto

    given = tmp_path / "dist" / "model.onnx"
    entry = tmp_path / "cache" / "test_vit-0123456789abcdef" / "model.onnx"
    for path in (given, entry):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\x00not a protobuf" * 10)
    (entry.parent / "manifest.json").write_text("{}")
    with pytest.raises(OnnxFileError) as info:
        load_onnx_proto(given)
    assert "Re-export it: this file is only read here, nothing rebuilds it." in str(info.value)
    assert "cache" not in str(info.value)
    with pytest.raises(OnnxFileError) as info:
        load_onnx_proto(entry)
    assert f"Delete the cache entry {entry.parent} so that the cache rebuilds it." in str(info.value)


def test_stamp_builds_no_model(files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data config of a spec comes from timm's pretrained config: stamping never builds (or loads) the model."""
    import timm

    from pytest_onnx_parity import read_data_config, resolve_data_config, stamp_onnx

    def no_build(*a: Any, **k: Any) -> None:
        raise AssertionError("stamp built the model")

    monkeypatch.setattr(timm, "create_model", no_build)
    out = stamp_onnx(files["plain"], f"{NAME}={files['ckpt']}", output=tmp_path / "s.onnx")
    assert read_data_config(out) == resolve_data_config(NAME)


def test_the_summary_table_shows_file_names_and_the_report_keeps_paths() -> None:
    from pytest_onnx_parity.report.render import summary_lines

    deep = f"{NAME}=/ckpt/experiments/2024-07-01/run-17/checkpoint-best.safetensors@/builds/ci/4711/dist/model.onnx"
    row = {"status": "passed", "max_abs_diff": 1e-6, "top1_agreement": 1.0, "timings": {}, "variant": {}}
    table = summary_lines([{**row, "model": deep}, {**row, "model": "resnet18"}])
    assert f"{NAME}=checkpoint-best.safetensors@model.onnx  passed" in table and "/builds/" not in table
    assert max(len(line) for line in table.splitlines()) < 130
    # two files of the same name stay told apart
    twins = summary_lines([{**row, "model": f"{NAME}@a/model.onnx"}, {**row, "model": f"{NAME}@b/model.onnx"}])
    assert f"{NAME}@a/model.onnx" in twins and f"{NAME}@b/model.onnx" in twins


# -- the gate ---------------------------------------------------------------------------------------

GATE = ["--onnx-parity", "-p", "no:cacheprovider", "--onnx-parity-layers", "never"]


def test_gate_checks_a_file_given_relative_to_the_rootdir(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    from pytest_onnx_parity import stamp_onnx

    (pytester.path / "dist").mkdir()
    shipped = stamp_onnx(files["plain"], NAME, output=pytester.path / "dist" / "model.onnx")
    before = _fingerprint(shipped)
    pytester.makepyfile(test_project="def test_own():\n    assert True\n")
    pytester.makeini(f"[pytest]\nonnx_parity_models =\n    {NAME}={files['ckpt']}@dist/model.onnx\n")
    sub = pytester.path / "sub"
    sub.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)  # the path is resolved against the rootdir, not the working directory
        result = pytester.runpytest(*GATE, "-m", "onnx_parity", "--onnx-parity-report=r.json", "-v", str(pytester.path))
    result.assert_outcomes(passed=1, deselected=1)
    assert "test_own" not in result.stdout.str().split("deselected")[-1]
    entry = json.loads((sub / "r.json").read_text())["models"][0]
    assert entry["onnx_path"] == str(shipped) and entry["status"] == "passed"
    assert _fingerprint(shipped) == before


def test_the_three_ways_give_the_same_model_exporter_and_weights(
        pytester: pytest.Pytester, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """check_parity(onnx=FILE), onnx-parity check FILE and the gate's NAME@FILE describe one file alike: the
    label is SPEC@FILE as given, the exporter what the file says (here: TorchScript, from its node names)."""
    from pytest_onnx_parity import check_parity, stamp_onnx
    from pytest_onnx_parity.__main__ import main

    (pytester.path / "dist").mkdir()
    stamp_onnx(files["timm"], NAME, output=pytester.path / "dist" / "model.onnx")  # timm's onnx_export, stamped
    pytester.makeini("[pytest]\n")
    monkeypatch.chdir(pytester.path)
    spec, rel = f"{NAME}={files['ckpt']}", "dist/model.onnx"
    api = check_parity(spec, onnx=rel, **FAST).to_dict()
    assert main(["check", rel, "--model", spec, "--layers", "never", "--report", "cli.json"]) == 0
    cli = json.loads(Path("cli.json").read_text())["models"][0]
    pytester.runpytest(*GATE, f"--onnx-parity-models={spec}@{rel}", "--onnx-parity-report=gate.json").assert_outcomes(
        passed=1)
    gate = json.loads(Path("gate.json").read_text())["models"][0]
    fields = ("model", "exporter", "weights", "onnx_path", "status")
    assert {k: api[k] for k in fields} == {k: cli[k] for k in fields} == {k: gate[k] for k in fields}
    assert api["model"] == f"{spec}@{rel}" and api["exporter"] == "torchscript" and api["weights"] == str(files["ckpt"])
    assert api["variant"]["exporter"] == cli["variant"]["exporter"] == gate["variant"]["exporter"] == "torchscript"
    # a file without provenance, by torch.onnx.export(dynamo=False): TorchScript too, never the option's default
    plain = check_parity(spec, onnx=files["plain"], exporter="dynamo", **FAST)
    assert plain.exporter == "torchscript" and plain.model == f"{spec}@{files['plain']}"


def test_a_given_files_exporter_is_what_the_file_says(tmp_path: Path) -> None:
    """Provenance first, then the graph (dynamo scope metadata, TorchScript node names), else None: unknown."""
    import onnx
    from onnx import TensorProto, helper

    from pytest_onnx_parity.onnxfile.metadata import file_exporter

    def graph_file(name: str, node_name: str, scoped: bool) -> Path:
        node = helper.make_node("Relu", ["x"], ["y"], name=node_name)
        if scoped:
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'act']")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
        onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y])), str(tmp_path / name))
        return tmp_path / name

    cases = {graph_file("d.onnx", "node_relu", True): "dynamo", graph_file("t.onnx", "/act/Relu", False): "torchscript",
             graph_file("u.onnx", "n0", False): None}
    for path, expected in cases.items():
        assert file_exporter(path, {}) == expected, path
        assert file_exporter(path) == expected, path  # the file's own (empty) provenance
        assert file_exporter(path, {"exporter": None, "stamped": True}) == expected, path
    assert file_exporter(tmp_path / "u.onnx", {"exporter": "torchscript"}) == "torchscript"


def test_gate_failure_prints_the_table_once(pytester: pytest.Pytester, files: dict[str, Path]) -> None:
    result = pytester.runpytest(*GATE, f"--onnx-parity-models={NAME}={files['ckpt']}@{files['plain']}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert out.count("max abs diff  top-1") == 1, out
    assert "onnx-parity stamp" in out


@pytest.mark.parametrize("spec,needle", [
    (f"{NAME}@missing.onnx", "ONNX file not found"),
    (f"{NAME}@model.bin", "is not an ONNX file"),
    ("test_*@model.onnx", "a pattern cannot be checked against one ONNX file"),
])
def test_gate_bad_file_specs_are_usage_errors(pytester: pytest.Pytester, spec: str, needle: str) -> None:
    (pytester.path / "model.onnx").write_bytes(b"")
    result = pytester.runpytest(*GATE, f"--onnx-parity-models={spec}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert needle in result.stderr.str()


def test_models_without_the_gate_flag_say_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_project="def test_own():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--onnx-parity-models", NAME)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "runs only with --onnx-parity" in result.stderr.str()


# -- the weights check leads -------------------------------------------------------------------------


def test_a_failed_weights_check_leads_the_failure_summary() -> None:
    from pytest_onnx_parity.results import CheckResult, ParityResult

    r = ParityResult(model="m", status="failed", checks=[
        CheckResult("weights", "failed", "head.weight differs (40% of values)"),
        CheckResult("data_config", "passed"),
        CheckResult("logits", "failed", "Logits not close; tolerance: --onnx-parity-atol/rtol"),
    ])
    text = r.failure_message()
    assert text.index("head.weight differs") < text.index("Logits not close")
    assert "weights differ" in text.splitlines()[0] and "loosening a tolerance will not help" in text
    r.checks[0].status = "passed"
    assert "weights differ" not in r.failure_message()  # the rule can tell the two apart


def test_a_wrong_model_leads_the_failure_summary_and_the_rest_is_one_line_each() -> None:
    from pytest_onnx_parity.results import CheckResult, ParityResult

    name = "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"  # a name with ':' in it
    weights = CheckResult("weights", "failed", f"this file does not hold {name}'s weights: 0 of its 152 weights matched.",
                          {"other_model": True, "model_name": name})
    layers = CheckResult("layers", "failed", "The weights check failed: ...\nfirst divergence at blocks.0\n" +
                         "\n".join(f"row {i}" for i in range(100)))
    r = ParityResult(model=f"{name}=v.safetensors@r.onnx", status="failed", checks=[
        weights, CheckResult("data_config", "failed", "r.onnx carries no data config. onnx-parity stamp r.onnx ..."),
        CheckResult("logits", "failed", "Logits on a random batch are not close!\n\nMismatched elements: 9 / 9"), layers])
    lines = r.failure_message().splitlines()
    assert lines[0] == (f"this file does not hold {name}'s weights ({name}=v.safetensors@r.onnx: weights failed; then "
                        "data_config, logits, layers failed, as they must with another model's file).")
    assert lines[-3:] == ["data_config: r.onnx carries no data config. onnx-parity stamp r.onnx ...",
                          "logits: Logits on a random batch are not close! Mismatched elements: 9 / 9",
                          "layers: first divergence at blocks.0"]
    assert len(lines) == 9


def test_weights_check_runs_first_and_the_behaviour_checks_point_at_it(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The call site of weightcheck.compare_weights, with a stand-in that fails."""
    import sys
    import types

    from pytest_onnx_parity import check_parity

    seen: list[Any] = []

    class Fake:
        status, message = "failed", "blocks.0.attn.qkv.weight differs"

        def to_dict(self) -> dict[str, Any]:
            return {"status": self.status, "message": self.message, "first_differing": ["blocks.0.attn.qkv.weight"]}

    def compare_weights(model: Any, onnx_file: Any) -> Fake:
        seen.append(Path(onnx_file))
        return Fake()

    monkeypatch.setitem(sys.modules, "pytest_onnx_parity.checks.weightmatch",
                        types.SimpleNamespace(compare_weights=compare_weights))
    r = check_parity(f"{NAME}=random", onnx=files["plain"], **FAST)
    assert seen == [files["plain"]]
    assert r.checks[0].name == "weights" and r.checks[0].status == "failed"
    assert r.checks[0].details["first_differing"] == ["blocks.0.attn.qkv.weight"]
    logits = r.check("logits")
    assert logits.status == "failed" and logits.message.startswith("The weights check failed")
    assert r.failure_message().index("qkv.weight differs") < r.failure_message().index("\nlogits: ")

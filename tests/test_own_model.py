"""Your own model: ``NAME(ARGS)`` specs, heads and stems read from a checkpoint, timm train.py
checkpoints and their data config, and the issue's end-to-end cases on files made by a plain
``torch.onnx.export`` and stamped with ``onnx-parity stamp``.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from pytest_onnx_parity.errors import SpecError, WeightsError
from pytest_onnx_parity.specs import names_weights, parse_spec, short_text, split_specs

FAST = {"layers": "never", "real_images": False}


# -- the grammar (no torch) ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name", "weights", "args", "onnx_file"), [
    ("resnet18", "resnet18", "random", {}, None),
    ("resnet18(num_classes=0)=/ckpt/emb.safetensors", "resnet18", "/ckpt/emb.safetensors", {"num_classes": 0}, None),
    ("efficientnet_b0(features_only=True,out_indices=(2,3,4))=b.pth@f.onnx", "efficientnet_b0", "b.pth",
     {"features_only": True, "out_indices": (2, 3, 4)}, "f.onnx"),
    ("vit_tiny_patch16_224(img_size=160, num_classes=3)", "vit_tiny_patch16_224", "random",
     {"img_size": 160, "num_classes": 3}, None),
    ("resnet18(global_pool='', drop_path_rate=0.1)", "resnet18", "random", {"global_pool": "", "drop_path_rate": 0.1}, None),
    ("resnet18(out_indices=[1, [2, 3]])", "resnet18", "random", {"out_indices": (1, (2, 3))}, None),
    ("resnet18=/runs/a(1)/model.pth", "resnet18", "/runs/a(1)/model.pth", {}, None),  # parentheses in a path
])
def test_specs_with_model_arguments_parse(text: str, name: str, weights: str, args: dict, onnx_file: str | None) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.weights, spec.kwargs, spec.onnx_file) == (name, weights, args, onnx_file)
    assert spec.text == text  # the item's id keeps the spec as written
    assert names_weights(text) == ("=" in text.split(")")[-1] or "=" in text.split("(")[0])


@pytest.mark.parametrize(("text", "needle"), [
    ("resnet18(num_classes=)", "not a list of key=value pairs"),
    ("resnet18(10)", "a value without a key"),
    ("resnet18(pool=avg)", "quote a string"),
    ("resnet18(num_classes=10", "never closed"),
    ("resnet18(num_classes=10)x", "only =WEIGHTS may follow"),
    ("resnet18(**kw)", "a value without a key"),
])
def test_bad_model_arguments_name_the_fix(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match="e.g.") as info:
        parse_spec(text)
    assert needle in str(info.value) and text in str(info.value)


def test_commas_inside_parentheses_never_split_a_list() -> None:
    text = "resnet18(num_classes=0)=a.pth,efficientnet_b0(features_only=True,out_indices=(2,3,4)),vit_tiny_patch16_224\nconvnext_atto"
    assert split_specs(text) == ["resnet18(num_classes=0)=a.pth", "efficientnet_b0(features_only=True,out_indices=(2,3,4))",
                                 "vit_tiny_patch16_224", "convnext_atto"]
    from pytest_onnx_parity.settings import OPTIONS

    models = next(o for o in OPTIONS if o.noun == "models").parse
    assert len(models(text)) == 4 and len(models(["resnet18(out_indices=(1,2))", "resnet18"])) == 2
    assert short_text("resnet18(num_classes=0)=/ckpt/run7/emb.safetensors") == "resnet18(num_classes=0)=emb.safetensors"


def test_a_pattern_keeps_its_arguments_for_every_name() -> None:
    from pytest_onnx_parity.specs import expand_patterns

    specs = expand_patterns(["convnext_at*(num_classes=0)=random"])
    assert specs and all(s.kwargs == {"num_classes": 0} and s.text == f"{s.name}(num_classes=0)=random" for s in specs)


def test_model_args_join_the_spec_and_a_conflict_is_named() -> None:
    from pytest_onnx_parity.specs import with_model_args

    spec = with_model_args(parse_spec("resnet18(num_classes=0)"), {"global_pool": "avg", "num_classes": 0})
    assert spec.kwargs == {"num_classes": 0, "global_pool": "avg"} and spec.label == "resnet18(num_classes=0,global_pool='avg')"
    with pytest.raises(SpecError, match="num_classes=0 and model_args sets num_classes=5"):
        with_model_args(parse_spec("resnet18(num_classes=0)"), {"num_classes": 5})


def test_data_config_overrides_are_checked() -> None:
    from pytest_onnx_parity.preprocessing.dataconfig import check_overrides

    assert check_overrides({"mean": [0.5, 0.5, 0.5], "crop_pct": 0.95}) == {"mean": (0.5, 0.5, 0.5), "crop_pct": 0.95}
    with pytest.raises(SpecError, match="not a data config field; known: input_size"):
        check_overrides({"men": (0.5,)})
    with pytest.raises(SpecError, match="crop_pct=5 is not valid"):
        check_overrides({"crop_pct": 5})


# -- checkpoints ---------------------------------------------------------------------------------------


def _timm(name: str, **kwargs: Any) -> Any:
    """A "fine-tune": timm's model with weights under which every layer matters (timm's init zeroes the last
    norm of residual branches, so a fault there could not reach the output; trained weights are not zero)."""
    import timm
    import torch

    from pytest_onnx_parity.model.build import make_nondegenerate

    torch.manual_seed(1)
    return make_nondegenerate(timm.create_model(name, **kwargs), seed=1).eval()


def _train_args(**kwargs: Any) -> argparse.Namespace:
    base = dict(model="resnet18", mean=None, std=None, crop_pct=None, interpolation="", img_size=None, input_size=None,
                in_chans=None, epochs=3, lr=0.1)
    return argparse.Namespace(**{**base, **kwargs})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints as fine-tunes and timm's train.py leave them (made once)."""
    import torch
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("ckpts")
    ft10 = _timm("resnet18", num_classes=10)
    save_file(ft10.state_dict(), str(out / "ft10.safetensors"))
    emb = _timm("resnet18", num_classes=0)
    torch.save(emb.state_dict(), out / "emb.pth")
    ema = _timm("resnet18", num_classes=10)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.9)
    args = _train_args(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9, interpolation="bilinear", img_size=160)
    torch.save({"epoch": 3, "arch": "resnet18", "args": args,
                "state_dict": {f"module.{k}": v for k, v in ft10.state_dict().items()},
                "state_dict_ema": ema.state_dict()}, out / "train.pth.tar")

    # a checkpoint that needs pickle code beyond the weights-only allowlist (a class to construct)
    torch.save({"state_dict": ft10.state_dict(), "extra": PurePosixPath("/runs/7")}, out / "unsafe.pth")
    return {"ft10": out / "ft10.safetensors", "emb": out / "emb.pth", "train": out / "train.pth.tar",
            "unsafe": out / "unsafe.pth"}


def test_head_and_stem_are_read_from_the_checkpoint(ckpts: dict[str, Path]) -> None:
    import torch

    from pytest_onnx_parity import load_model, resolve_data_config

    ft = load_model(f"resnet18={ckpts['ft10']}")
    assert ft.num_classes == 10 and ft(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    emb = load_model(f"resnet18={ckpts['emb']}")
    assert emb.num_classes == 0 and emb(torch.zeros(1, 3, 64, 64)).shape == (1, 512)
    gray = _timm("resnet18", in_chans=1, num_classes=4)
    path = ckpts["ft10"].parent / "gray.pth"
    torch.save(gray.state_dict(), path)
    model = load_model(f"resnet18={path}")
    assert model.conv1.in_channels == 1 and model.num_classes == 4
    cfg = resolve_data_config(model)  # load_model writes the resolved config into timm's pretrained_cfg
    assert cfg["input_size"] == [1, 224, 224] and len(cfg["mean"]) == 1


def test_a_checkpoint_that_does_not_fit_lists_keys_shapes_and_the_fitting_argument(ckpts: dict[str, Path]) -> None:
    from pytest_onnx_parity import load_model

    with pytest.raises(WeightsError) as info:
        load_model(f"resnet18(num_classes=3)={ckpts['ft10']}")
    text = str(info.value)
    assert "fc.weight: checkpoint (10, 512), model (3, 512)" in text and "num_classes=10" in text
    assert "random" not in text
    with pytest.raises(WeightsError) as info:
        load_model(f"resnet34={ckpts['ft10']}")
    text = str(info.value)
    assert "missing from the checkpoint" in text and "state dict of resnet34" in text and "random" not in text


def test_an_argument_the_architecture_rejects_names_it_and_the_model() -> None:
    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.model.constructor import check_model_args

    with pytest.raises(SpecError, match="resnet18 does not take the model argument 'bogus'"):
        check_model_args(parse_spec("resnet18(bogus=1)"))
    with pytest.raises(SpecError, match="does not take the model argument 'bogus'"):
        load_model("resnet18", bogus=1)
    check_model_args(parse_spec("efficientnet_b0(features_only=True,out_indices=(2,3,4))"))  # accepted


def test_train_py_checkpoints_load_ema_weights_and_their_data_config(ckpts: dict[str, Path]) -> None:
    import torch

    import timm.data

    from pytest_onnx_parity import load_model, load_model_record, resolve_data_config

    spec = f"resnet18={ckpts['train']}"
    built = load_model_record(spec)
    model, record = built.module, built.record
    raw = torch.load(ckpts["train"], weights_only=False)
    assert record.checkpoint.weight_set == "state_dict_ema"  # as timm.create_model(checkpoint_path=)
    assert torch.equal(model.fc.weight, raw["state_dict_ema"]["fc.weight"])
    other = load_model_record(spec, use_ema=False)
    assert other.record.checkpoint.weight_set == "state_dict"
    assert torch.equal(other.module.fc.weight, raw["state_dict"]["module.fc.weight"])  # module. prefix removed
    want = {"input_size": [3, 160, 160], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
            "crop_pct": 0.9, "crop_mode": "center"}
    assert record.data_config == want and record.data_config_source == "checkpoint_args"
    # the module alone carries the config in timm's own field, so timm's resolver and ours agree on it
    assert resolve_data_config(load_model(spec)) == want == resolve_data_config(model)
    assert {k: list(v) if isinstance(v, tuple) else v for k, v in timm.data.resolve_data_config(model=model).items()} == want
    assert not [k for k in vars(model) if k.startswith("onnx_parity")]  # nothing of ours on the module
    assert resolve_data_config(spec) == want  # from the checkpoint, no model built
    over = resolve_data_config(spec, data_config={"crop_pct": 1.0})
    assert over == {**want, "crop_pct": 1.0}
    assert resolve_data_config("resnet18")["mean"] == [0.485, 0.456, 0.406]


def test_a_checkpoint_needing_pickle_code_is_refused_clearly(ckpts: dict[str, Path]) -> None:
    from pytest_onnx_parity import load_model

    with pytest.raises(WeightsError, match="was not loaded: it needs pickle code") as info:
        load_model(f"resnet18={ckpts['unsafe']}")
    assert "Nothing in it ran" in str(info.value) and "safetensors" in str(info.value)


def test_local_dir_folders_load_as_timm_saves_them(tmp_path: Path) -> None:
    import torch
    from timm.models import save_for_hf

    from pytest_onnx_parity import load_model, load_model_record, resolve_data_config

    model = _timm("resnet18", num_classes=3)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                            "label_names": ["cat", "dog", "owl"]}
    save_for_hf(model, str(tmp_path), model_config={"num_classes": 3, "label_names": ["cat", "dog", "owl"]})
    spec = f"local-dir:{tmp_path}=pretrained"
    loaded = load_model(spec)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    cfg = resolve_data_config(spec)
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.25] * 3
    assert loaded.pretrained_cfg["label_names"][1] == "dog"
    assert load_model_record(spec).record.data_config_source == "config_json"


# -- the cases: plain torch.onnx.export, onnx-parity stamp, then check -------------------------


def _export(model: Any, size: int, path: Path, n_out: int = 1) -> Path:
    import torch

    outs = ["y"] if n_out == 1 else [f"y{i}" for i in range(n_out)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, model.pretrained_cfg["input_size"][0], size, size),),
                          str(path), dynamo=False, input_names=["x"], output_names=outs,
                          dynamic_axes={"x": {0: "b"}, **{o: {0: "b"} for o in outs}})
    return path


def _stamp(path: Path, spec: str, capsys: pytest.CaptureFixture[str], *more: str) -> str:
    from pytest_onnx_parity.__main__ import main

    assert main(["stamp", str(path), "--model", spec, *more]) == 0
    return capsys.readouterr().out


def _faulty(path: Path, spec: str, layer: str) -> Path:
    import onnx

    from pytest_onnx_parity import load_model
    from pytest_onnx_parity.testing import scale_layer_weights

    out = path.with_name(path.stem + "-fault.onnx")
    onnx.save(scale_layer_weights(load_model(spec), path, layer, 1.05), str(out))
    return out


def _failed(result: Any) -> set[str]:
    return {c.name for c in result.checks if c.status == "failed"}


@pytest.mark.parametrize(("spec", "ckpt", "kind"), [
    ("resnet18={}", "ft10", "logits"),  # a 10-class fine-tune, no arguments: the head is read from the checkpoint
    ("resnet18(num_classes=0)={}", "emb", "embedding"),  # a pooled embedding
])
def test_a_fine_tune_passes_and_a_5_percent_layer_fault_fails(ckpts: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str], spec: str, ckpt: str,
                                                              kind: str) -> None:
    from pytest_onnx_parity import check_parity, load_model

    spec = spec.format(ckpts[ckpt])
    path = _export(load_model(spec), 224, tmp_path / f"{ckpt}.onnx")
    _stamp(path, spec, capsys)
    ok = check_parity(f"{spec}@{path}")
    assert ok.passed, ok.failure_message()
    assert ok.output_kind == kind and ok.data_config_source == "pretrained_cfg"
    assert (ok.check("topk").status == "skipped") == (kind == "embedding")  # top-k has no meaning for an embedding
    bad = check_parity(f"{spec}@{_faulty(path, spec, 'layer3.0.conv2')}", **FAST)
    assert bad.status == "failed" and "logits" in _failed(bad)


def test_a_train_py_checkpoint_stamps_its_own_config_and_the_base_config_fails(
        ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from pytest_onnx_parity import check_parity, load_model, read_data_config
    from pytest_onnx_parity.__main__ import main

    spec = f"resnet18={ckpts['train']}"
    own = _export(load_model(spec), 160, tmp_path / "own.onnx")
    base = shutil.copy(own, tmp_path / "base.onnx")
    assert "from the checkpoint's training args" in _stamp(own, spec, capsys)
    assert read_data_config(own)["mean"] == [0.5, 0.5, 0.5] and read_data_config(own)["input_size"] == [3, 160, 160]
    ok = check_parity(f"{spec}@{own}")
    assert ok.passed, ok.failure_message()
    assert ok.to_dict()["data_config_source"] == "checkpoint_args"
    assert main(["stamp", str(base), "--model", "resnet18"]) == 2  # its 224 px contradicts the file's fixed 160
    assert "input is fixed at 160x160, but the data config to stamp says 224x224" in capsys.readouterr().err
    _stamp(Path(base), "resnet18", capsys, "--force")  # the base name's config, forced
    bad = check_parity(f"{spec}@{base}", layers="never")
    dc = bad.check("data_config")
    assert bad.status == "failed" and dc.status == "failed"
    for field in ("input_size", "interpolation", "mean", "std", "crop_pct"):
        assert f"{field}: model wants" in dc.message, field
    assert "from the checkpoint's training args" in dc.message and f"--model {spec}" in dc.message


def test_the_other_weight_set_is_named_by_the_weights_check(ckpts: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_onnx_parity import check_parity, load_model

    spec = f"resnet18={ckpts['train']}"
    raw = _export(load_model(spec, use_ema=False), 160, tmp_path / "raw.onnx")  # the file of the non-EMA weights
    _stamp(raw, spec, capsys)
    bad = check_parity(f"{spec}@{raw}", **FAST)
    weights = bad.check("weights")
    assert weights.status == "failed" and "holds the checkpoint's state_dict weights" in weights.message
    assert "--onnx-parity-weight-set state_dict" in weights.message
    ok = check_parity(f"{spec}@{raw}", weight_set="state_dict", **FAST)
    assert ok.passed, ok.failure_message()


def test_a_features_only_backbone_passes_and_a_deep_fault_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from pytest_onnx_parity import check_parity, load_model

    ckpt = tmp_path / "b0.pth"
    torch.save(_timm("efficientnet_b0", features_only=True, out_indices=(2, 3, 4)).state_dict(), ckpt)
    spec = f"efficientnet_b0(features_only=True,out_indices=(2,3,4))={ckpt}"
    path = _export(load_model(spec), 224, tmp_path / "b0.onnx", n_out=3)
    _stamp(path, spec, capsys)
    ok = check_parity(f"{spec}@{path}")
    assert ok.passed, ok.failure_message()
    assert ok.output_kind == "features"
    bad = check_parity(f"{spec}@{_faulty(path, spec, 'blocks.5.0.conv_pw')}", **FAST)
    assert bad.status == "failed" and "logits" in _failed(bad)
    assert "output 2" in bad.check("logits").message


def test_a_vit_at_its_own_size_and_head_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    from pytest_onnx_parity import check_parity, load_model

    ckpt = tmp_path / "vit.safetensors"
    save_file(_timm("vit_tiny_patch16_224", img_size=160, num_classes=3).state_dict(), str(ckpt))
    spec = f"vit_tiny_patch16_224(img_size=160,num_classes=3)={ckpt}"
    path = _export(load_model(spec), 160, tmp_path / "vit.onnx")
    _stamp(path, spec, capsys)
    ok = check_parity(f"{spec}@{path}", layers="never")
    assert ok.passed, ok.failure_message()
    assert ok.data_config["input_size"] == [3, 160, 160]


def test_the_gate_takes_two_specs_with_arguments_in_one_comma_list(pytester: pytest.Pytester, ckpts: dict[str, Path],
                                                                   export_cache: str) -> None:
    report = pytester.path / "report.json"
    models = f"resnet18(num_classes=0)={ckpts['emb']},resnet18(num_classes=10)={ckpts['ft10']}"
    result = pytester.runpytest_inprocess("--onnx-parity", f"--onnx-parity-models={models}", "--onnx-parity-layers=never",
                                          f"--onnx-parity-cache-dir={export_cache}", f"--onnx-parity-report={report}",
                                          "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*onnx-parity?resnet18(num_classes=0)=*emb.pth?*PASSED*",
                                 "*onnx-parity?resnet18(num_classes=10)=*ft10.safetensors?*PASSED*"])  # ids as written
    entries = json.loads(report.read_text())["models"]
    assert [e["model"] for e in entries] == models.split(",", 1)[:1] + [models.split(",", 1)[1]]
    assert [e["output_kind"] for e in entries] == ["embedding", "logits"]


def test_a_rejected_argument_is_a_usage_error_in_the_gate(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--onnx-parity", "--onnx-parity-models=resnet18(bogus=1)", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "resnet18 does not take the model argument 'bogus'" in result.stderr.str()


def test_hub_and_local_dir_names_that_cannot_load_say_why(tmp_path: Path) -> None:
    from pytest_onnx_parity import load_model, resolve_data_config

    for call in (lambda: load_model("hf-hub:timm/resnet18.a1_in1k"), lambda: resolve_data_config("hf-hub:timm/resnet18.a1_in1k")):
        with pytest.raises(WeightsError, match="could not fetch the config.json of hf-hub:timm/resnet18.a1_in1k.*local-dir:"):
            call()  # the tests run offline (HF_HUB_OFFLINE=1): fails at once, one message
    with pytest.raises(SpecError, match="has no config.json; a local-dir: folder holds config.json"):
        load_model(f"local-dir:{tmp_path}")


def test_the_marker_takes_model_args_and_data_config(pytester: pytest.Pytester, export_cache: str) -> None:
    pytester.makepyfile(test_marker='''
import pytest

@pytest.mark.onnx_parity(model="resnet18", model_args={"num_classes": 0}, data_config={"crop_pct": 1.0})
def test_embedding(timm_model, data_config, onnx_export, random_batch):
    assert timm_model.num_classes == 0
    assert data_config["crop_pct"] == 1.0
    assert onnx_export().data_config["crop_pct"] == 1.0
    assert timm_model(__import__("torch").as_tensor(random_batch)).shape == (2, 512)

@pytest.mark.onnx_parity(model="resnet18(num_classes=7)")
def test_args_in_the_spec(timm_model):
    assert timm_model.num_classes == 7

@pytest.mark.onnx_parity(model="resnet18")
def test_plain(timm_model):
    assert timm_model.num_classes == 1000
''')
    result = pytester.runpytest_inprocess(f"--onnx-parity-cache-dir={export_cache}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_an_unstamped_file_names_the_data_configs_true_source(ckpts: dict[str, Path], tmp_path: Path) -> None:
    """The config of a train.py checkpoint comes from its training args: the message of a file without a
    config says so, never that it 'comes from the model's own timm pretrained config'."""
    from pytest_onnx_parity import check_parity, load_model
    from pytest_onnx_parity.errors import MissingMetadataError
    from pytest_onnx_parity.onnxfile.metadata import read_data_config

    spec = f"resnet18={ckpts['train']}"
    path = _export(load_model(spec), 160, tmp_path / "unstamped.onnx")
    dc = check_parity(f"{spec}@{path}", **FAST).check("data_config")
    assert dc.status == "failed"
    assert "This model's data config comes from the checkpoint's training args" in dc.message, dc.message
    assert "the model's own timm pretrained config" not in dc.message
    with pytest.raises(MissingMetadataError) as info:  # the file alone: every source is named, none claimed
        read_data_config(path)
    assert "the first of: data config overrides, a timm train.py checkpoint's training args" in str(info.value)


@pytest.mark.parametrize("tokens", [{}, {"reg_tokens": 4}, {"reg_tokens": 4, "no_embed_class": True},
                                    {"class_token": False, "global_pool": "avg"}])
def test_a_vits_image_size_is_read_from_its_position_table(tokens: dict[str, Any]) -> None:
    """pos_embed holds the patch grid (after the class and register tokens, unless no_embed_class): 36 patches of
    16 px are 96 px. Read like num_classes; nothing when the size is the name's own."""
    from pytest_onnx_parity.model.checkpoint import infer_model_args
    from pytest_onnx_parity.preprocessing.dataconfig import pretrained_config

    cfg = pretrained_config("vit_tiny_patch16_224")[0]
    at96 = _timm("vit_tiny_patch16_224", img_size=96, num_classes=3, **tokens).state_dict()
    assert infer_model_args(at96, cfg, tokens)["img_size"] == 96
    at224 = _timm("vit_tiny_patch16_224", num_classes=3, **tokens).state_dict()
    assert "img_size" not in infer_model_args(at224, cfg, tokens)
    assert "img_size" not in infer_model_args(at96, cfg, {**tokens, "img_size": 112})  # given: never overridden


@pytest.mark.parametrize("layout", ["safetensors", "train.py"])
def test_stamp_and_check_read_a_vits_image_size_alike(layout: str, tmp_path: Path) -> None:
    """A vit_tiny_patch16_224 trained at 96 px: stamp and check build from the same arguments, so the spec needs
    no (img_size=96) in either, and check passes the file stamp stamped."""
    import torch
    from safetensors.torch import save_file

    from pytest_onnx_parity import check_parity, load_model, read_data_config, resolve_data_config, stamp_onnx

    src = _timm("vit_tiny_patch16_224", img_size=96, num_classes=3)
    if layout == "safetensors":
        ckpt = tmp_path / "vit96.safetensors"
        save_file(src.state_dict(), str(ckpt))
    else:
        ckpt = tmp_path / "model_best.pth.tar"
        args = _train_args(model="vit_tiny_patch16_224", img_size=96, mean=(0.5,) * 3, std=(0.5,) * 3)
        torch.save({"epoch": 1, "arch": "vit_tiny_patch16_224", "args": args, "state_dict": src.state_dict()}, ckpt)
    spec = f"vit_tiny_patch16_224={ckpt}"
    model = load_model(spec)
    assert tuple(model.patch_embed.img_size) == (96, 96) and model.num_classes == 3
    assert resolve_data_config(spec)["input_size"] == [3, 96, 96] == resolve_data_config(model)["input_size"]
    path = stamp_onnx(_export(model, 96, tmp_path / "vit.onnx"), spec)
    assert read_data_config(path)["input_size"] == [3, 96, 96]
    result = check_parity(f"{spec}@{path}", **FAST)
    assert result.passed, result.failure_message()

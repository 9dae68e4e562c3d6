"""What the package learns about a model is a typed record handed down, never an attribute on the module.

The structure rule (no ``onnx_parity_*`` attribute set on, or read from, any object in the package) is checked
on the package's source and shown to catch planted cases; the behaviour around it is checked on real runs: the
module is never changed, its data config travels in timm's own ``pretrained_cfg``, and the record's source,
spec and checkpoint reach the report.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest_onnx_parity

PACKAGE = Path(pytest_onnx_parity.__file__).parent
PREFIX = "onnx_parity_"


def module_attributes(source: str, name: str = "<source>") -> list[str]:
    """Each place ``source`` sets or reads an ``onnx_parity_*`` attribute: ``x.onnx_parity_a = ...``,
    ``setattr(x, "onnx_parity_a", ...)``, ``getattr(x, "onnx_parity_a", ...)``, ``x.onnx_parity_a`` (reads)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith(PREFIX):
            found.append(f"{name}:{node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("setattr", "getattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).startswith(PREFIX)):
            found.append(f"{name}:{node.lineno}: {node.func.id}({node.args[1].value!r})")
    return found


def test_the_rule_finds_attributes_planted_every_way() -> None:
    planted = ("def f(model, spec):\n"
               "    model.onnx_parity_spec = spec\n"
               "    setattr(model, 'onnx_parity_seed', 0)\n"
               "    return getattr(model, 'onnx_parity_data_config', None), model.onnx_parity_checkpoint\n")
    found = module_attributes(planted)
    assert len(found) == 4, found
    # what stays allowed: timm's own fields, option names and ini keys (strings that are not attribute names)
    allowed = ("def g(model, config):\n"
               "    model.pretrained_cfg = {**model.pretrained_cfg, 'label_names': ['a']}\n"
               "    return config.getini('onnx_parity_models'), {'onnx_parity_seed': 0}\n")
    assert module_attributes(allowed) == []


def test_no_onnx_parity_attribute_is_set_on_or_read_from_a_module() -> None:
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 100
    found = [hit for p in files for hit in module_attributes(p.read_text(encoding="utf-8"), str(p.relative_to(PACKAGE)))]
    assert found == []


def test_load_model_leaves_nothing_of_ours_on_the_module_and_the_record_holds_what_was_learned() -> None:
    import timm.data

    from pytest_onnx_parity import load_model_record, resolve_data_config

    spec = "vit_small_patch16_224.augreg_in21k_ft_in1k(img_size=64,depth=1)"
    built = load_model_record(spec)
    model, record = built.module, built.record
    assert not [k for k in vars(model) if k.startswith(PREFIX)]
    assert record.spec is not None and record.spec.label == spec and record.seed == 0
    assert record.random_weights and record.calibration == "noise and photos" and record.checkpoint is None
    assert record.data_config["mean"] == [0.5, 0.5, 0.5] and record.data_config["input_size"] == [3, 64, 64]
    assert record.data_config_source == "pretrained_cfg"
    # the module alone: the same config, through our resolver and through timm's own
    assert resolve_data_config(model) == record.data_config
    timm_cfg = timm.data.resolve_data_config(model=model)
    assert list(timm_cfg["input_size"]) == [3, 64, 64] and list(timm_cfg["mean"]) == [0.5] * 3
    assert timm_cfg["crop_pct"] == record.data_config["crop_pct"] and timm_cfg["interpolation"] == "bicubic"


def test_overrides_on_a_given_module_go_into_the_run_not_onto_the_module(tmp_path: Path) -> None:
    from pytest_onnx_parity import check_parity, export_onnx, load_model, read_data_config, resolve_data_config

    model = load_model("test_resnet")
    before = dict(model.pretrained_cfg)
    own = resolve_data_config(model)
    override = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    exp = export_onnx(model, exporter="torchscript", cache_dir=tmp_path, data_config=override)
    assert read_data_config(exp.path)["mean"] == [0.5] * 3
    assert dict(model.pretrained_cfg) == before and resolve_data_config(model) == own
    assert not [k for k in vars(model) if k.startswith(PREFIX)]
    result = check_parity(model, exporter="torchscript", cache_dir=str(tmp_path), data_config=override,
                          layers="never", real_images=False)
    assert result.passed, result.failure_message()
    assert result.data_config_source == "override" and result.to_dict()["data_config"]["mean"] == [0.5] * 3
    plain = check_parity(model, exporter="torchscript", cache_dir=str(tmp_path), layers="never", real_images=False)
    assert plain.data_config_source == "pretrained_cfg" and plain.to_dict()["data_config"]["mean"] == own["mean"]


def test_a_loaded_model_keeps_its_source_through_the_public_api(tmp_path: Path) -> None:
    """A LoadedModel given to check_parity and export_onnx carries the record's source and weights' identity: the
    same cache entry as the spec itself, where the bare module is keyed by a hash of its weights."""
    import torch

    from pytest_onnx_parity import check_parity, export_onnx, load_model_record

    path = tmp_path / "ckpt.pth"
    torch.save({"args": {"mean": (0.5,) * 3, "std": (0.5,) * 3, "img_size": 64},
                "state_dict": load_model_record("test_resnet").module.state_dict()}, path)
    built = load_model_record(f"test_resnet={path}")
    assert built.record.data_config_source == "checkpoint_args" and built.record.checkpoint is not None
    result = check_parity(built, exporter="torchscript", cache_dir=str(tmp_path), layers="never", real_images=False)
    assert result.passed and result.data_config_source == "checkpoint_args"
    assert result.to_dict()["data_config"]["input_size"] == [3, 64, 64]
    by_spec = export_onnx(f"test_resnet={path}", exporter="torchscript", cache_dir=tmp_path)
    by_record = export_onnx(built, exporter="torchscript", cache_dir=tmp_path)
    assert by_record.cache_hit and by_record.path == by_spec.path
    module_alone = check_parity(built.module, exporter="torchscript", cache_dir=str(tmp_path), layers="never",
                                real_images=False)
    assert module_alone.data_config_source == "pretrained_cfg"  # what a module alone can say
    assert module_alone.to_dict()["data_config"] == result.to_dict()["data_config"]  # the same config, all the same


def test_weights_identity_needs_the_record_for_the_seeded_shortcut() -> None:
    from pytest_onnx_parity import load_model_record
    from pytest_onnx_parity.model.build import weights_identity

    built = load_model_record("test_resnet=random", seed=3)
    assert weights_identity(built).startswith("random:seed=3:")
    assert weights_identity(built.module).startswith("sha256:")  # a module alone: hashed, never assumed

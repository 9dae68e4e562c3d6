"""Labelled folders as a timm user's folders are: ImageNet synsets, class indices, a fine-tune's own class names
(sorted as timm's train.py reads an ImageFolder), or a labels file; and why accuracy is not judged otherwise."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_onnx_parity.errors import ImageError
from pytest_onnx_parity.preprocessing.images import bundled_image_paths
from pytest_onnx_parity.preprocessing.labels import Labels, Unlabelled, natural_key, read_labels


def _tree(root: Path, classes: dict[str, list[str]]) -> Path:
    photos = {p.name: p for p in bundled_image_paths()}
    for cls, names in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(photos[name], root / cls / name)
    return root


def test_class_names_are_read_as_timm_train_py_reads_them(tmp_path: Path) -> None:
    import timm.data.readers.reader_image_folder as reader

    root = _tree(tmp_path / "val", {"dog": ["chelsea.jpg"], "cat": ["coffee.jpg"], "class10": ["rocket.jpg"]})
    found = read_labels(root, num_classes=3)
    assert isinstance(found, Labels) and "train.py" in found.rule
    _, class_to_idx = reader.find_images_and_targets(str(root))  # timm's own rule
    assert {p.parent.name: y for p, y in found.items} == class_to_idx
    assert found.names == sorted(class_to_idx, key=class_to_idx.get)
    assert natural_key("class2") < natural_key("class10")


def test_class_names_that_do_not_fit_the_head_say_why(tmp_path: Path) -> None:
    root = _tree(tmp_path / "val", {"dog": ["chelsea.jpg"], "cat": ["coffee.jpg"]})
    found = read_labels(root, num_classes=5)
    assert isinstance(found, Unlabelled)
    assert "2 class folders (cat, dog)" in found.why and "5 classes" in found.why and "--onnx-parity-labels" in found.why


def test_a_labels_file_names_the_classes_in_index_order(tmp_path: Path) -> None:
    root = _tree(tmp_path / "val", {"dog": ["chelsea.jpg"], "cat": ["coffee.jpg"]})
    labels = tmp_path / "classes.txt"
    labels.write_text("zebra\ndog\ncat\n")
    found = read_labels(root, num_classes=3, labels_file=labels)
    assert isinstance(found, Labels)
    assert {p.parent.name: y for p, y in found.items} == {"dog": 1, "cat": 2}
    assert found.names == ["zebra", "dog", "cat"]
    wrong_count = read_labels(root, num_classes=4, labels_file=labels)
    assert isinstance(wrong_count, Unlabelled) and "names 3 classes" in wrong_count.why
    labels.write_text("zebra\ndog\n")
    missing = read_labels(root, num_classes=2, labels_file=labels)
    assert isinstance(missing, Unlabelled) and "cat" in missing.why
    labels.write_text("")
    with pytest.raises(ImageError, match="names no class"):
        read_labels(root, labels_file=labels)


def test_imagenet_synsets_only_for_an_imagenet_head(tmp_path: Path) -> None:
    root = _tree(tmp_path / "val", {"n02123159": ["chelsea.jpg"], "n07920052": ["coffee.jpg"]})
    found = read_labels(root, num_classes=1000)
    assert isinstance(found, Labels) and found.rule == "ImageNet-1k synsets"
    assert sorted(found.targets) == [282, 967]
    assert isinstance(read_labels(root, num_classes=2), Labels)  # two folders, a 2-class head: names, sorted
    assert "train.py" in read_labels(root, num_classes=2).rule  # type: ignore[union-attr]


def test_indices_beyond_the_head_are_not_labels(tmp_path: Path) -> None:
    root = _tree(tmp_path / "val", {"0": ["chelsea.jpg"], "7": ["coffee.jpg"]})
    assert isinstance(read_labels(root, num_classes=10), Labels)
    found = read_labels(root, num_classes=5)
    assert isinstance(found, Unlabelled) and "reach 7" in found.why


def test_a_flat_folder_is_plain_and_says_so(tmp_path: Path) -> None:
    for p in bundled_image_paths():
        (tmp_path / "flat").mkdir(exist_ok=True)
        shutil.copy(p, tmp_path / "flat" / p.name)
    found = read_labels(tmp_path / "flat", num_classes=1000)
    assert isinstance(found, Unlabelled) and "plain folder" in found.why and len(found.paths) == 4


def test_the_gate_judges_a_fine_tunes_own_classes_and_says_why_not(pytester: pytest.Pytester) -> None:
    """A 3-class fine-tune's folders (train.py's ImageFolder layout) are labelled; with random weights the accuracy
    cannot be judged, and the check and the terminal say why; a folder that fits no rule says that instead."""
    import json

    import torch  # noqa: F401  (loaded before the in-process run)

    root = _tree(pytester.path / "val", {"dog": ["chelsea.jpg"], "cat": ["coffee.jpg"], "bird": ["rocket.jpg"]})
    result = pytester.runpytest("--onnx-parity", "--onnx-parity-models=test_resnet(num_classes=3)",
                                f"--onnx-parity-images={root}", "--onnx-parity-layers=never",
                                "--onnx-parity-report=r.json", "-p", "no:cacheprovider")
    real = next(c for c in json.loads((pytester.path / "r.json").read_text())["models"][0]["checks"]
                if c["name"] == "real_images")
    assert real["labels_rule"].startswith("class names in sorted order")
    assert real["accuracy_judged"] is False and "random weights" in real["accuracy_not_judged"]
    result.stdout.fnmatch_lines(["*accuracy not judged*random weights*"])
    result = pytester.runpytest("--onnx-parity", "--onnx-parity-models=test_resnet(num_classes=5)",
                                f"--onnx-parity-images={root}", "--onnx-parity-layers=never",
                                "--onnx-parity-report=r.json", "-p", "no:cacheprovider")
    real = next(c for c in json.loads((pytester.path / "r.json").read_text())["models"][0]["checks"]
                if c["name"] == "real_images")
    assert "fit no labelling rule" in real["accuracy_not_judged"]
    result.stdout.fnmatch_lines(["*accuracy not judged*fit no labelling rule*"])

"""Real images: bundled photos, image folders, unreadable files, labelled ImageFolder trees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_onnx_parity.errors import ImageError
from pytest_onnx_parity.preprocessing.images import IMAGE_EXTENSIONS, bundled_image_paths, find_images, iter_batches, labelled_folder, load_images, real_batch
from pytest_onnx_parity.preprocessing.transform import preprocess

CONFIG = {"input_size": (3, 64, 48), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
          "crop_pct": 0.9, "crop_mode": "center"}


def save(path: Path, size: tuple[int, int] = (12, 9), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)
    return path


# --- bundled photos ----------------------------------------------------------------------------


def test_bundled_photos_are_small_real_photos_with_attribution():
    paths = bundled_image_paths()
    assert [p.name for p in paths] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert sum(p.stat().st_size for p in paths) < 400_000
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "RGB" and 288 <= min(image.size) and max(image.size) <= 640, (path.name, image.size)
            assert np.asarray(image).std() > 20, f"{path.name} looks blank"
    sources = (paths[0].parent.parent / "SOURCES.md").read_text()  # beside the folder: it holds images only
    for path in paths:
        row = next(line for line in sources.splitlines() if line.startswith(f"| {path.name} |"))
        assert "CC0" in row or "public domain" in row
    assert "downscaled" in sources


def test_every_file_of_the_bundled_folder_is_an_image():
    """``preprocess(glob(".../data/images/*"), cfg)`` reads the whole folder: no attribution file inside it."""
    from glob import glob

    from pytest_onnx_parity.preprocessing.images import BUNDLED_DIR

    files = sorted(glob(str(BUNDLED_DIR / "*")))
    assert [Path(f).name for f in files] == [p.name for p in bundled_image_paths()]
    cfg = {"input_size": [3, 32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
           "crop_pct": 0.875, "crop_mode": "center"}
    assert preprocess(files, cfg).shape == (len(files), 3, 32, 32)


def test_real_batch_defaults_to_bundled_photos():
    batch, paths = real_batch(CONFIG)
    assert paths == bundled_image_paths()
    assert batch.shape == (4, 3, 64, 48) and batch.dtype == np.float32
    assert np.array_equal(batch, preprocess(paths, CONFIG))
    assert len({batch[i].tobytes() for i in range(4)}) == 4


def test_real_batch_from_a_folder_or_a_list(tmp_path):
    b = save(tmp_path / "b.png", value=10)
    a = save(tmp_path / "sub" / "a.jpg", value=200)
    batch, paths = real_batch(CONFIG, tmp_path)
    assert paths == [b, a]  # "b.png" sorts before "sub/a.jpg"
    assert np.array_equal(batch, preprocess([b, a], CONFIG))
    batch2, paths2 = real_batch(CONFIG, [a])
    assert paths2 == [a] and np.array_equal(batch2, batch[1:])


# --- finding images ----------------------------------------------------------------------------


def test_find_images_is_recursive_sorted_and_filters(tmp_path):
    for name in ["z.JPG", "a/b/deep.webp", "a/y.png", "B.bmp", "c.tiff", "d.gif", "e.ppm", "f.jpeg", "g.tif"]:
        save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.csv").write_text("a,b")
    save(tmp_path / ".hidden.png")
    save(tmp_path / ".ipynb_checkpoints" / "x.png")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["B.bmp", "a/b/deep.webp", "a/y.png", "c.tiff", "d.gif", "e.ppm", "f.jpeg", "g.tif", "z.JPG"]
    assert find_images(str(tmp_path)) == find_images(tmp_path)
    assert set(IMAGE_EXTENSIONS) >= {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def test_empty_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageError, match="holds no images") as info:
        find_images(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ImageError, match="holds no images"):
        real_batch(CONFIG, tmp_path)


def test_missing_folder_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ImageError, match="does not exist") as info:
        find_images(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ImageError, match="does not exist"):
        real_batch(CONFIG, missing)
    file = save(tmp_path / "one.png")
    with pytest.raises(ImageError, match="is not a folder"):
        find_images(file)


# --- unreadable files --------------------------------------------------------------------------


def test_load_images_lists_every_unreadable_file(tmp_path):
    good = save(tmp_path / "good.png", size=(5, 3))
    bad1 = tmp_path / "bad1.jpg"
    bad1.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    bad2 = tmp_path / "bad2.png"
    bad2.write_text("plain text in disguise")
    with pytest.raises(ImageError) as info:
        load_images([good, bad1, bad2])
    message = str(info.value)
    assert message.startswith("2 images cannot be read:")
    assert str(bad1) in message and str(bad2) in message and str(good) not in message
    images = load_images([good, good])
    assert [im.size for im in images] == [(5, 3), (5, 3)] and images[0].mode == "RGB"


def test_real_batch_of_a_folder_with_bad_files_fails_listing_them(tmp_path):
    save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError) as info:
        real_batch(CONFIG, tmp_path)
    message = str(info.value)
    assert "2 images cannot be read" in message
    assert "broken.png" in message and "empty.jpg" in message and "ok.png" not in message


def test_load_images_converts_modes_like_timm(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).save(path)
    (image,) = load_images([path])
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image)[:, :, 1], np.arange(12).reshape(3, 4) * 20)


# --- streaming ---------------------------------------------------------------------------------


def test_iter_batches_streams_the_same_arrays(tmp_path):
    paths = [save(tmp_path / f"{i}.png", size=(10 + i, 8), value=20 * i) for i in range(5)]
    chunks = list(iter_batches(paths, CONFIG, batch_size=2, workers=2))
    assert [len(p) for _, p in chunks] == [2, 2, 1]
    assert [p for _, ps in chunks for p in ps] == paths
    assert np.array_equal(np.concatenate([a for a, _ in chunks]), preprocess(paths, CONFIG))


def test_iter_batches_fails_on_a_bad_file(tmp_path):
    paths = [save(tmp_path / "a.png"), tmp_path / "gone.png", tmp_path / "also_gone.png"]
    with pytest.raises(ImageError) as info:
        list(iter_batches(paths, CONFIG, batch_size=8))
    assert "gone.png" in str(info.value) and "also_gone.png" in str(info.value)


# --- labelled folders ----------------------------------------------------------------------------


def test_labelled_folder_of_synsets(tmp_path):
    save(tmp_path / "n01440764" / "fish.jpg")  # tench, class 0
    save(tmp_path / "n02123045" / "cat1.png")  # tabby cat, class 281
    save(tmp_path / "n02123045" / "cat2.png")
    save(tmp_path / "n04270147" / "x.png")  # spatula, class 813
    labels = labelled_folder(tmp_path)
    assert labels == [
        (tmp_path / "n01440764" / "fish.jpg", 0),
        (tmp_path / "n02123045" / "cat1.png", 281),
        (tmp_path / "n02123045" / "cat2.png", 281),
        (tmp_path / "n04270147" / "x.png", 813),
    ]


def test_labelled_folder_of_class_indices(tmp_path):
    save(tmp_path / "281" / "cat.png")
    save(tmp_path / "7" / "cock.png")
    save(tmp_path / "999" / "tissue.png")
    assert labelled_folder(tmp_path) == [
        (tmp_path / "281" / "cat.png", 281),
        (tmp_path / "7" / "cock.png", 7),
        (tmp_path / "999" / "tissue.png", 999),
    ]


@pytest.mark.parametrize(
    "files",
    [
        ["a.png", "b.png"],  # flat folder
        ["cats/a.png", "dogs/b.png"],  # class names, not ImageNet
        ["n01440764/a.png", "top.png"],  # images outside class folders
        ["n01440764/a.png", "n01440764/deeper/b.png"],  # nested below a class
        ["n01440764/a.png", "281/b.png"],  # synsets and indices mixed
        ["n00000001/a.png"],  # synset-shaped, not an ImageNet-1k class
        ["1000/a.png"],  # index out of range
    ],
)
def test_not_a_labelled_folder(tmp_path, files):
    for name in files:
        save(tmp_path / name)
    assert labelled_folder(tmp_path) is None


def test_labelled_folder_of_an_empty_tree_is_an_error(tmp_path):
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        labelled_folder(tmp_path)

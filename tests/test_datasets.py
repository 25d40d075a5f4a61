"""Built-in datasets: the contract kit on every source, real-data sizes, limits and splits,
seeded group transforms, and a clear message for each kind of bad input."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcvae_framework import ConfigError, DataError, build, validate_config
from mcvae_framework.config.plugins import current_registry
from mcvae_framework.testing import DatasetContract
from mcvae_framework.interfaces import balanced_first
from mcvae_builtins.datasets.idx import DEBIAN_FASHION_MNIST

SE2 = {"group": "se2", "angle_deg": [-90, 90], "shift": 0.15, "seed": 3, "canvas": 40}
SO2 = {"group": "so2", "angle_deg": [-180, 180], "seed": 0, "canvas": 36}


@pytest.fixture(scope="module", autouse=True)
def data_cache(tmp_path_factory):
    """Decompressed IDX files go to a temporary cache, not the user's home."""
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("data_cache")
    mp.setenv("MCVAE_DATA_CACHE", str(path))
    yield path
    mp.undo()


# ------------------------------------------------------------------ small files on disk

def write_idx(folder: Path, n_train: int, n_test: int, side: int = 6, layout: str = "flat", gz: bool = True):
    """Tiny IDX files (the MNIST format: big-endian header, then bytes) with labels i % 10."""
    rng = np.random.default_rng(0)
    target = folder if layout == "flat" else folder / "MNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, side, side) + pixels.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
        }
        for name, payload in files.items():
            if gz:
                with gzip.open(target / f"{name}.gz", "wb") as f:
                    f.write(payload)
            else:
                (target / name).write_bytes(payload)


def write_png_folder(folder: Path, per_class: int = 12, classes=("cat", "dog"), side: int = 10, mode: str = "L"):
    rng = np.random.default_rng(1)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (side, side) if mode == "L" else (side, side, 3)
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(folder / name / f"{i:03d}.png")
    return folder


def npz_file(tmp_path: Path, name="data.npz", **arrays) -> str:
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    return write_png_folder(tmp_path_factory.mktemp("pngs"))


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
    rng = np.random.default_rng(2)
    folder = tmp_path_factory.mktemp("arrays")
    return npz_file(folder, images=rng.random((30, 3, 12, 12), dtype=np.float32), labels=np.repeat([5, 7, 9], 10))


# ------------------------------------------------------------------ contract kits

class TestMNIST5kContract(DatasetContract):
    dataset_config = {"type": "mnist5k", "limit": 60}


class TestMNIST5kSE2Contract(DatasetContract):
    dataset_config = {"type": "mnist5k", "limit": 40, "transform": SE2}


class TestDigitsSO2Contract(DatasetContract):
    dataset_config = {"type": "digits", "limit": 50, "transform": {"group": "so2", "canvas": 12}}
    splits = ("train", "test", "all")  # split_sizes() counts `all` whichever split is built


class TestFashionMNISTContract(DatasetContract):
    dataset_config = {"type": "fashion_mnist", "limit": 50}
    splits = ("train", "test", "all")


class TestImageFolderContract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, png_folder):
        type(self).dataset_config = {"type": "image_folder", "path": str(png_folder), "test_fraction": 0.25}


class TestArraysContract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, npz_path):
        type(self).dataset_config = {"type": "arrays", "path": npz_path, "transform": {"group": "so2"}}


def test_all_tags_registered():
    assert {"mnist5k", "mnist", "fashion_mnist", "digits", "image_folder", "arrays"} <= set(current_registry().tags("data"))


# ------------------------------------------------------------------ real data, splits, limits

def test_mnist5k_is_5000_real_digits_500_per_class_split_80_20():
    train, test = (build("data", {"type": "mnist5k"}, split=s) for s in ("train", "test"))
    assert (len(train), len(test)) == (4000, 1000)
    assert train.split_sizes() == {"train": 4000, "test": 1000, "all": 5000}
    counts = {d.split: np.bincount(d.as_tensors()["label"].numpy(), minlength=10) for d in (train, test)}
    assert (counts["train"] == 400).all() and (counts["test"] == 100).all()  # stratified
    assert train.image_shape == (1, 28, 28) and train.n_classes == 10
    # the splits are disjoint: no image of test appears in train
    train_keys = {img.numpy().tobytes() for img in train.as_tensors()["image"]}
    assert not any(img.numpy().tobytes() in train_keys for img in test.as_tensors()["image"])
    # a different split seed gives a different split of the same 5,000
    other = build("data", {"type": "mnist5k", "split_seed": 1}, split="test")
    assert not torch.equal(other.as_tensors()["image"], test.as_tensors()["image"])


def test_fashion_mnist_reads_the_debian_idx_files_60000_10000():
    assert DEBIAN_FASHION_MNIST.is_dir(), "install the data: apt-get install -y dataset-fashion-mnist"
    train = build("data", {"type": "fashion_mnist"}, split="train")
    test = build("data", {"type": "fashion_mnist"}, split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.split_sizes() == {"train": 60000, "test": 10000, "all": 70000}
    assert (np.bincount(train.as_tensors()["label"].numpy()) == 6000).all()
    assert train.class_names[0] == "T-shirt/top" and train.image_shape == (1, 28, 28)
    assert train.as_tensors()["image"].max() == 1.0


def test_limit_is_class_balanced_and_keeps_source_order():
    ds = build("data", {"type": "mnist5k", "limit": 25}, split="train")
    counts = np.bincount(ds.as_tensors()["label"].numpy(), minlength=10)
    assert sorted(counts.tolist()) == [2] * 5 + [3] * 5
    assert ds.split_sizes() == {"train": 25, "test": 25, "all": 50}
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    assert balanced_first(labels, 7, 5).tolist() == [0, 1, 4, 5, 6]  # class 1 runs out; 0 and 2 fill in
    assert balanced_first(None, 7, 3).tolist() == [0, 1, 2]
    assert balanced_first(labels, 7, None).tolist() == list(range(7))


def test_digits_seeded_split_covers_all_1797():
    sizes = build("data", {"type": "digits", "test_fraction": 0.5}, split="test").split_sizes()
    assert sizes["train"] + sizes["test"] == sizes["all"] == 1797 and abs(sizes["train"] - sizes["test"]) <= 10


@pytest.mark.parametrize("layout,gz", [("flat", True), ("flat", False), ("torchvision", False)])
def test_mnist_reads_idx_files_under_a_root_in_either_layout(tmp_path, layout, gz):
    write_idx(tmp_path / "root", 30, 20, layout=layout, gz=gz)
    cfg = {"type": "mnist", "root": str(tmp_path / "root"), "cache_dir": str(tmp_path / "cache")}
    train, test = build("data", cfg, split="train"), build("data", cfg, split="test")
    assert (len(train), len(test)) == (30, 20) and train.image_shape == (1, 6, 6)
    assert train.as_tensors()["label"].tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    raw = next((tmp_path / "root").rglob("train-images-idx3-ubyte*"))
    first = (gzip.open(raw) if raw.suffix == ".gz" else open(raw, "rb")).read()[16:52]
    assert torch.equal(train[0]["image"].flatten(), torch.tensor(list(first), dtype=torch.float32) / 255)


def test_missing_idx_files_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        build("data", {"type": "fashion_mnist", "root": str(tmp_path / "nowhere")}, split="train")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "download: true" in msg
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*looked in .*cache"):
        build("data", {"type": "mnist", "cache_dir": str(tmp_path / "cache")}, split="test")


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    write_idx(tmp_path, 10, 10, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="could not read the IDX files"):
        build("data", {"type": "mnist", "root": str(tmp_path), "cache_dir": str(tmp_path / "c")}, split="train")


# ------------------------------------------------------------------ transforms

def _poses(config, split="train"):
    return build("data", config, split=split).as_tensors()


def test_transform_is_reproducible_from_its_seed_and_index_stable():
    base = {"type": "mnist5k", "limit": 30, "transform": SE2}
    a, b = _poses(base), _poses(base)
    assert torch.equal(a["pose"], b["pose"]) and torch.equal(a["image"], b["image"])
    assert a["pose"].shape == (30, 3)
    other_seed = _poses({**base, "transform": {**SE2, "seed": 4}})
    assert not torch.allclose(other_seed["pose"], a["pose"])
    assert not torch.allclose(_poses(base, "test")["pose"], a["pose"])  # splits draw independent poses
    # index i keeps its pose whatever the dataset's length
    longer = _poses({**base, "limit": 1100})
    assert torch.equal(longer["pose"][:30], a["pose"])


def test_transform_poses_are_the_same_in_another_process(npz_path):
    config = {"type": "arrays", "path": npz_path, "limit": 5, "transform": {**SE2, "canvas": 16}}
    code = ("import json, sys; from mcvae_framework import build; "
            "ds = build('data', json.loads(sys.argv[1]), split='train'); "
            "print(json.dumps(ds.as_tensors()['pose'].tolist()))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config)], capture_output=True, text=True, check=True)
    assert torch.equal(torch.tensor(json.loads(out.stdout)), _poses(config)["pose"])


def test_poses_follow_the_group_distribution():
    pose = _poses({"type": "mnist5k", "limit": 400, "transform": SE2})["pose"]
    assert pose[:, 0].abs().max() <= np.pi / 2 + 1e-6 and pose[:, 0].abs().max() > 1.2
    assert pose[:, 0].std() > 0.6  # roughly uniform in [-90, 90] degrees, not a constant


@pytest.mark.parametrize("transform", [SE2, SO2], ids=["se2", "so2"])
def test_moving_back_by_the_inverse_pose_recovers_the_canonical_image(transform):
    data = _poses({"type": "mnist5k", "limit": 100, "transform": transform})
    group = build("group", {"type": transform["group"]})
    back = group.act(data["image"], group.inverse(group.exp(data["pose"])))
    canvas = transform["canvas"]
    inner = slice(canvas // 5, canvas - canvas // 5)  # away from the border
    error = (back - data["canonical"])[..., inner, inner].abs().mean()
    moved_error = (data["image"] - data["canonical"])[..., inner, inner].abs().mean()
    assert error < 0.05, error  # bilinear resampling twice blurs a little
    assert error < moved_error / 3
    # and the canonical is the original digit, zero-padded in the centre
    plain = _poses({"type": "mnist5k", "limit": 100})["image"]
    pad = (canvas - 28) // 2
    assert torch.equal(data["canonical"][..., pad:pad + 28, pad:pad + 28], plain)
    assert data["canonical"][..., :pad, :].abs().max() == 0


def test_default_canvas_is_the_image_side():
    ds = build("data", {"type": "digits", "limit": 10, "transform": {"group": "so2"}}, split="train")
    assert ds.image_shape == (1, 8, 8) and ds[0]["pose"].shape == (1,)


def test_unknown_group_in_transform_lists_known_groups():
    with pytest.raises(ConfigError) as info:
        build("data", {"type": "digits", "transform": {"group": "se3"}}, split="train")
    msg = str(info.value)
    assert "data.transform" in msg and "unknown group type 'se3'" in msg and "se2" in msg and "so2" in msg
    # caught when the whole experiment config is validated, too
    experiment = {"data": {"type": "mnist5k", "transform": {"group": "se3"}}, "group": {"type": "so2"},
                  "encoder": {"type": "conv"}, "decoder": {"type": "mlp"}, "prior": {"type": "gmm"}}
    with pytest.raises(ConfigError, match=r"data\.transform: group: unknown group type 'se3'"):
        validate_config(experiment, source="exp.yaml")


def test_bad_group_field_in_transform_names_it():
    with pytest.raises(ConfigError, match=r"data\.transform: shift:"):
        build("data", {"type": "digits", "transform": {"group": "se2", "shift": -1}}, split="train")
    with pytest.raises(ConfigError, match="name the group with `group:`"):
        build("data", {"type": "digits", "transform": {"group": "se2", "type": "se2"}}, split="train")


def test_canvas_smaller_than_images_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"data\.transform\.canvas: canvas 20 is smaller than the images \(28x28\)"):
        build("data", {"type": "mnist5k", "limit": 5, "transform": {"group": "so2", "canvas": 20}}, split="train")


def test_bad_split_and_bad_common_fields():
    with pytest.raises(ConfigError, match=r"splits train and test \(and all: both, in source order\), got 'val'"):
        build("data", {"type": "digits"}, split="val")
    with pytest.raises(ConfigError, match="data.limit"):
        build("data", {"type": "digits", "limit": 0}, split="train")
    with pytest.raises(ConfigError, match="data.test_fraction"):
        build("data", {"type": "digits", "test_fraction": 1.0}, split="train")


# ------------------------------------------------------------------ image folders

def test_image_folder_labels_from_subfolders(png_folder):
    ds = build("data", {"type": "image_folder", "path": str(png_folder), "test_fraction": 0.25}, split="train")
    assert ds.class_names == ["cat", "dog"] and ds.image_shape == (1, 10, 10)
    assert ds.split_sizes() == {"train": 18, "test": 6, "all": 24}
    rgb = build("data", {"type": "image_folder", "path": str(png_folder), "grayscale": False, "resize": 16},
                split="test")
    assert rgb.image_shape == (3, 16, 16)


def test_image_folder_without_subfolders_is_unlabelled(tmp_path):
    write_png_folder(tmp_path, per_class=5, classes=("x",), mode="RGB")
    ds = build("data", {"type": "image_folder", "path": str(tmp_path / "x")}, split="train")
    assert ds.n_classes is None and "label" not in ds[0] and ds.image_shape == (3, 10, 10)


def test_image_folder_bad_inputs(tmp_path):
    def load(path, **extra):
        return build("data", {"type": "image_folder", "path": str(path), **extra}, split="train")

    with pytest.raises(DataError, match="no folder at .*missing"):
        load(tmp_path / "missing")
    mixed = write_png_folder(tmp_path / "mixed", per_class=3)
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(mixed / "cat" / "big.png")
    with pytest.raises(DataError, match=r"different sizes .*10x10.*12x12.*set `resize: N`"):
        load(mixed)
    assert load(mixed, resize=8).image_shape == (1, 8, 8)
    (mixed / "cat" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match="not image files .*cat/notes.txt"):  # skipped, not fatal (issue 16)
        assert load(mixed, resize=8).image_shape == (1, 8, 8)
    broken = write_png_folder(tmp_path / "broken", per_class=3)
    (broken / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read .*bad.png as an image"):
        load(broken)
    loose = write_png_folder(tmp_path / "loose", per_class=3)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(loose / "stray.png")
    with pytest.raises(DataError, match="both class sub-folders .* and loose files .*stray.png"):
        load(loose)
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((10, 14), np.uint8)).save(wide / f"{i}.png")
    with pytest.raises(DataError, match="images are 14x10, not square"):
        load(wide)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load(tmp_path / "empty")


# ------------------------------------------------------------------ arrays

def test_arrays_npy_uint8_three_dims(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.full((10, 5, 5), 255, np.uint8))
    ds = build("data", {"type": "arrays", "path": str(path)}, split="train")
    assert ds.image_shape == (1, 5, 5) and ds.n_classes is None and len(ds) == 8
    assert ds[0]["image"].min() == 1.0


def test_arrays_labels_are_renumbered(npz_path):
    ds = build("data", {"type": "arrays", "path": npz_path}, split="train")
    assert ds.n_classes == 3 and ds.class_names == ["5", "7", "9"]
    assert set(ds.as_tensors()["label"].tolist()) == {0, 1, 2}


@pytest.mark.parametrize("arrays,fragment", [
    ({"images": np.zeros((4, 2, 3, 5, 5))}, r"volumes have shape \(4, 2, 3, 5, 5\); they must be cubes"),
    ({"images": np.zeros((4, 5, 5, 3))}, "looks channel-last; transpose"),
    ({"images": np.zeros((4, 1, 5, 6))}, "must be square"),
    ({"images": np.zeros((4, 5, 5)), "labels": np.zeros(3, int)}, r"labels have shape \(3,\) but there are 4 images"),
    ({"images": np.full((4, 5, 5), 200.0)}, r"must lie in \[0, 1\], found 200.0..200.0 \(divide by 255\?\)"),
    ({"images": np.zeros((4, 5, 5)), "labels": np.array([0.5, 1, 2, 3])}, "labels must be integers"),
    ({"pictures": np.zeros((4, 5, 5))}, "has no `images` array .*pictures"),
    ({"images": np.full((4, 5, 5), 300)}, r"integer images must lie in 0..255, found 300..300"),
])
def test_arrays_bad_inputs(tmp_path, arrays, fragment):
    path = npz_file(tmp_path, **arrays)
    with pytest.raises(DataError, match=fragment):
        build("data", {"type": "arrays", "path": path}, split="train")


def test_arrays_missing_file_wrong_suffix_and_empty_split(tmp_path):
    with pytest.raises(DataError, match="no file at .*absent.npz"):
        build("data", {"type": "arrays", "path": str(tmp_path / "absent.npz")}, split="train")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="neither .npy nor .npz"):
        build("data", {"type": "arrays", "path": str(tmp_path / "x.csv")}, split="train")
    path = npz_file(tmp_path, images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="test_fraction=0.1 leaves the test split empty"):
        build("data", {"type": "arrays", "path": path, "test_fraction": 0.1}, split="train")

"""The file formats users hold: MRC particle stacks (mrcfile), HDF5 (h5py), memory-mapped
``.npy`` and folders of TIFFs, each made here as a small real file: the contract kit,
preprocessing, end-to-end training and evaluation through the CLI, and bad files refused
with exit 2 and one message naming the file, the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import mrcfile
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from mcvae_framework import DataError, build
from mcvae_framework.cli import cli
from mcvae_framework.testing import DatasetContract
from mcvae_builtins.datasets.preprocess import Preprocess, circle_mask, fourier_crop

SIDE = 16


def blobs(n: int, side: int = SIDE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy particles of two shapes (a disc and a bar) on a noisy background, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    disc = (yy ** 2 + xx ** 2 < (side / 4) ** 2).astype(np.float32)
    bar = ((np.abs(yy) < side / 8) & (np.abs(xx) < side / 3)).astype(np.float32)
    labels = np.arange(n) % 2
    images = np.stack([disc if k == 0 else bar for k in labels]) * 5 + rng.normal(size=(n, side, side))
    return images.astype(np.float32), labels


def write_mrc(path: Path, data: np.ndarray, stack: bool = True) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if stack:
            mrc.set_image_stack()
    return path


def write_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    images, labels = blobs(40)
    np.save(folder / "labels.npy", labels)
    write_mrc(folder / "particles.mrcs", images)
    write_h5(folder / "cutouts.h5", **{"data/images": (np.clip(images / 8 + 0.3, 0, 1) * 255).astype(np.uint8),
                                       "data/classes": labels})
    np.save(folder / "images.npy", np.clip(images / 8 + 0.3, 0, 1).astype(np.float32))
    tiffs = folder / "tiffs"
    for k, image in enumerate(images[:24]):
        (tiffs / f"class{labels[k]}").mkdir(parents=True, exist_ok=True)
        pixels = (np.clip(image / 8 + 0.3, 0, 1) * 65535).astype(np.uint16)
        Image.fromarray(pixels).save(tiffs / f"class{labels[k]}" / f"{k:03d}.tif")
    return folder


# ------------------------------------------------------------------ contract kits, streamed

class TestMRCContract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, files):
        type(self).dataset_config = {"type": "mrc", "path": str(files / "particles.mrcs"), "storage": "stream",
                                     "labels": str(files / "labels.npy"), "downsample": 12,
                                     "transform": {"group": "so2", "canvas": 14}}


class TestHDF5Contract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, files):
        type(self).dataset_config = {"type": "hdf5", "path": str(files / "cutouts.h5"), "images": "data/images",
                                     "labels": "data/classes", "storage": "stream"}


class TestMemoryMappedNpyContract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, files):
        type(self).dataset_config = {"type": "arrays", "path": str(files / "images.npy"), "storage": "stream",
                                     "transform": {"group": "so2"}}


class TestTiffFolderContract(DatasetContract):
    @pytest.fixture(autouse=True)
    def _config(self, files):
        type(self).dataset_config = {"type": "image_folder", "path": str(files / "tiffs"), "storage": "stream"}


# ------------------------------------------------------------------ reading and preprocessing

def test_mrc_particles_are_standardised_inside_the_circle(files):
    ds = build("data", {"type": "mrc", "path": str(files / "particles.mrcs"), "clip_sigma": 4.0}, split="train")
    images = ds.as_tensors()["image"]
    z = images[..., circle_mask(SIDE, 1.0)] * 8 - 4  # back from [0, 1] to standard units
    assert torch.allclose(z.mean(-1), torch.zeros(1), atol=0.05) and torch.allclose(z.std(-1), torch.ones(1), atol=0.1)
    assert ds.n_classes is None and ds.image_shape == (1, SIDE, SIDE)


def test_fourier_crop_keeps_the_mean_and_the_low_frequencies():
    rng = np.random.default_rng(1)
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    smooth = torch.tensor(np.cos(2 * np.pi * xx / 32) + np.sin(2 * np.pi * 2 * yy / 32) + 3, dtype=torch.float32)
    noisy = smooth + torch.tensor(rng.normal(scale=0.01, size=(32, 32)), dtype=torch.float32)
    small = fourier_crop(noisy[None, None], 8)[0, 0]
    yy8, xx8 = np.meshgrid(np.arange(8) * 4, np.arange(8) * 4, indexing="ij")  # periodic resampling: x = 4k
    expected = np.cos(2 * np.pi * xx8 / 32) + np.sin(2 * np.pi * 2 * yy8 / 32) + 3
    assert small.shape == (8, 8) and abs(float(small.mean()) - float(noisy.mean())) < 1e-4
    assert np.abs(small.numpy() - expected).max() < 0.05  # a band-limited image is resampled, not blurred


def test_preprocess_options_map_into_the_unit_interval():
    rows = np.random.default_rng(2).normal(size=(3, 10, 10)).astype(np.float32) * 50 - 7
    for normalize in ("standardize", "minmax"):
        out = Preprocess(normalize, invert=True, downsample=6)(rows)
        assert out.shape == (3, 1, 6, 6) and out.min() >= 0 and out.max() <= 1
    minmax = Preprocess("minmax")(rows)
    assert minmax.flatten(1).min(1).values.eq(0).all() and minmax.flatten(1).max(1).values.eq(1).all()
    inverted = Preprocess("none", invert=True, scale=255.0)(np.full((1, 4, 4), 51, np.uint8))
    assert torch.allclose(inverted, torch.full((1, 1, 4, 4), 0.8))


def test_16_bit_tiffs_keep_their_depth(files):
    ds = build("data", {"type": "image_folder", "path": str(files / "tiffs"), "storage": "stream"}, split="train")
    image = ds[0]["image"]
    assert ds.image_shape == (1, SIDE, SIDE) and ds.class_names == ["class0", "class1"]
    assert len(torch.unique(image)) > 200  # 8-bit conversion would leave at most 256 levels, clipped at 255/65535
    assert 0.2 < float(image.mean()) < 0.8


# ------------------------------------------------------------------ end to end through the CLI

def experiment(tmp_path: Path, data: dict, name: str) -> Path:
    config = {
        "data": {**data, "transform": {"group": "so2", "seed": 0}},
        "group": {"type": "so2"}, "encoder": {"type": "mlp", "hidden": [32]}, "decoder": {"type": "mlp", "hidden": [32]},
        "prior": {"type": "gmm", "n_components": 2}, "model": {"z_cluster_dim": 2, "z_style_dim": 1},
        "loss": {"mode": "unsupervised", "n_augment": 1},
        "training": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "num_threads": 1,
                     "out_dir": str(tmp_path / f"run_{name}")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("name", ["mrc", "hdf5", "npy"])
def test_train_and_evaluate_end_to_end(files, tmp_path, name):
    data = {
        "mrc": {"type": "mrc", "path": str(files / "particles.mrcs"), "labels": str(files / "labels.npy")},
        "hdf5": {"type": "hdf5", "path": str(files / "cutouts.h5"), "images": "data/images", "labels": "data/classes"},
        "npy": {"type": "arrays", "path": str(files / "images.npy")},
    }[name]
    config = experiment(tmp_path, {**data, "storage": "stream"}, name)
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", str(config)])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(cli, ["evaluate", str(tmp_path / f"run_{name}")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / f"run_{name}" / "report.json").read_text())
    assert report["n_images"] == 8 and ("accuracy" in report) == (name != "npy") and "pose" in report


# ------------------------------------------------------------------ bad files: exit 2, one paragraph

def bad_mrc(folder: Path, case: str) -> dict:
    path = folder / f"{case}.mrcs"
    if case == "complex":
        write_mrc(path, np.zeros((4, 8, 8), np.complex64))
    elif case == "not_square":
        write_mrc(path, np.zeros((4, 8, 10), np.float32))
    elif case == "empty":
        write_mrc(path, np.zeros((0, 8, 8), np.float32))
    elif case == "volume":
        path = write_mrc(folder / "volume.mrc", np.zeros((8, 8, 8), np.float32), stack=False)
    elif case == "garbage":
        path.write_bytes(b"not an MRC file" * 100)
    return {"type": "mrc", "path": str(path)}


def bad_h5(folder: Path, case: str) -> dict:
    path = folder / f"{case}.h5"
    data = {"type": "hdf5", "path": str(path)}
    if case == "missing_dataset":
        write_h5(path, pictures=np.zeros((4, 8, 8), np.uint8))
    elif case == "not_square":
        write_h5(path, images=np.zeros((4, 8, 10), np.uint8))
    elif case == "empty":
        write_h5(path, images=np.zeros((0, 8, 8), np.uint8))
    elif case == "labels_length":
        write_h5(path, images=np.zeros((4, 8, 8), np.uint8), y=np.arange(3))
        data["labels"] = "y"
    elif case == "garbage":
        path.write_bytes(b"not HDF5" * 100)
    return data


def bad_npy(folder: Path, case: str) -> dict:
    path = folder / f"{case}.npy"
    if case == "pickled":
        np.save(path, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    elif case == "not_square":
        np.save(path, np.zeros((4, 8, 10), np.uint8))
    elif case == "out_of_range":
        np.save(path, np.full((4, 8, 8), 3.0, np.float32))
    return {"type": "arrays", "path": str(path), "storage": "stream"}


BAD = [
    (bad_mrc, "complex", r"field `mode` of the header is 4: the file holds complex values"),
    (bad_mrc, "not_square", r"10 x 8 pixels \(header nx x ny\), not square; extract them in square boxes"),
    (bad_mrc, "empty", r"the stack is empty \(header nz = 0\)"),
    (bad_mrc, "volume", r"marks it as a 3-D volume \(field `ispg` = 1\).*set_image_stack"),
    (bad_mrc, "garbage", r"not a readable MRC file \(mrcfile: .*\); check that the file is complete"),
    (bad_h5, "missing_dataset", r"`images: images` does not exist; the file's datasets: pictures \(4, 8, 8\)\. "
                                r"Set `images:`"),
    (bad_h5, "not_square", r"holds 10 x 8 images, not square; crop or pad"),
    (bad_h5, "empty", r"dataset 'images' is empty"),
    (bad_h5, "labels_length", r"\(dataset 'y'\): labels have shape \(3,\) but there are 4 images"),
    (bad_h5, "garbage", r"not a readable HDF5 file"),
    (bad_npy, "pickled", r"cannot read .*without pickled objects"),
    (bad_npy, "not_square", r"they must be square"),
    (bad_npy, "out_of_range", r"float images must lie in \[0, 1\], found 3.0..3.0 \(divide by 255\?\)"),
]


@pytest.mark.parametrize("make,case,message", BAD, ids=[f"{m.__name__[4:]}-{c}" for m, c, _ in BAD])
def test_a_bad_file_is_refused_with_exit_2_and_a_message(tmp_path, make, case, message):
    data = make(tmp_path, case)
    config = experiment(tmp_path, data, "bad")
    with pytest.raises(DataError, match=message):
        build("data", data, split="train")
    result = CliRunner().invoke(cli, ["train", str(config)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text and Path(data["path"]).name in text and "\n\n" not in text


def test_downsampling_beyond_the_particle_size_is_refused(files):
    with pytest.raises(DataError, match=r"downsample 32 is larger than the particles \(16 px\)"):
        build("data", {"type": "mrc", "path": str(files / "particles.mrcs"), "downsample": 32}, split="train")

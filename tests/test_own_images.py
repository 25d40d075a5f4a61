"""A user's own files: relative paths read from the config file's folder, missing paths
reported by `config validate` (exit 2), stray files skipped, every image in source order
with its name (the `all` split)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from mcvae_framework import build, load_config
from mcvae_framework.cli import cli
from mcvae_framework.config.experiment import component_config, missing_resources

SECTIONS = {"group": {"type": "so2"}, "encoder": {"type": "mlp"}, "decoder": {"type": "mlp"},
            "prior": {"type": "gmm", "n_components": 2}}


def write_images(folder, names, side=8):
    for seed, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)).save(path)


def write_config(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"data": data, **SECTIONS}))
    return path


def test_a_relative_path_is_read_from_the_config_files_folder(tmp_path, monkeypatch):
    write_images(tmp_path / "images", [f"{i}.png" for i in range(6)])
    config_file = write_config(tmp_path / "experiments" / "mine.yaml",
                               {"type": "image_folder", "path": "../images", "test_fraction": 0.5})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the config's folder, not the images' parent
    config = load_config(config_file)
    assert config.data.path == str((tmp_path / "images").resolve())
    assert len(build("data", config.data, split="train")) == 3
    result = CliRunner().invoke(cli, ["config", "validate", str(config_file)])
    assert result.exit_code == 0, result.output
    # a dict built in Python has no file: its relative paths stay relative to the current folder
    assert component_config("data", {"type": "image_folder", "path": "images"}).path == "images"


def test_config_validate_reports_a_missing_data_path_with_exit_2(tmp_path):
    config_file = write_config(tmp_path / "cfg" / "mine.yaml", {"type": "image_folder", "path": "no_such_folder"})
    result = CliRunner().invoke(cli, ["config", "validate", str(config_file)])
    assert result.exit_code == 2
    assert str(config_file) in result.output and "data.path" in result.output
    assert str(tmp_path / "cfg" / "no_such_folder") in result.output  # resolved against the config's folder
    assert "config file's folder" in result.output and "Traceback" not in result.output
    arrays = write_config(tmp_path / "cfg" / "arrays.yaml", {"type": "arrays", "path": "none.npz"})
    result = CliRunner().invoke(cli, ["config", "validate", str(arrays)])
    assert result.exit_code == 2 and "data.path: no file at" in result.output
    # bundled data names no path: nothing to miss
    assert missing_resources(load_config(write_config(tmp_path / "ok.yaml", {"type": "digits"}))) == []


def test_a_stray_file_beside_class_folders_is_skipped_with_a_warning(tmp_path):
    write_images(tmp_path / "data", ["cats/1.png", "cats/2.png", "dogs/1.png", "dogs/2.png"])
    (tmp_path / "data" / "notes.txt").write_text("collected in May")
    (tmp_path / "data" / "dogs" / "README").write_text("good dogs")
    (tmp_path / "data" / ".DS_Store").write_text("")
    with pytest.warns(UserWarning, match=r"skipped 2 .*(notes\.txt.*README|README.*notes\.txt)"):
        ds = build("data", {"type": "image_folder", "path": str(tmp_path / "data"), "test_fraction": 0.5},
                   split="all")
    assert ds.class_names == ["cats", "dogs"]
    assert ds.item_names == ["cats/1.png", "cats/2.png", "dogs/1.png", "dogs/2.png"]
    assert ds.as_tensors()["label"].tolist() == [0, 0, 1, 1]
    assert sorted(ds.item_splits) == ["test", "test", "train", "train"]


def test_a_folder_of_only_other_files_says_what_it_skipped(tmp_path):
    from mcvae_framework.errors import DataError

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found \(skipped 1 other entries: a\.txt\)"):
        build("data", {"type": "image_folder", "path": str(tmp_path / "docs")}, split="train")


def test_the_all_split_is_every_image_in_source_order_with_its_splits_poses(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    section = {"type": "arrays", "path": str(tmp_path / "x.npy"), "test_fraction": 0.25,
               "transform": {"group": "so2", "seed": 3}}
    everything = build("data", section, split="all")
    assert everything.source_indices == list(range(20)) and everything.split == "all"
    assert len(everything) == everything.split_sizes()["all"] == 20
    tensors = everything.as_tensors()
    assert np.array_equal((tensors["canonical"][:, 0] * 255).round().numpy().astype(np.uint8), images)
    for split in ("train", "test"):
        part = build("data", section, split=split)
        rows = [i for i, s in enumerate(everything.item_splits) if s == split]
        assert part.source_indices == rows
        assert np.array_equal(tensors["pose"][rows].numpy(), part.as_tensors()["pose"].numpy())
    # a tiny folder still predicts: `all` does not need both splits to be non-empty
    write_images(tmp_path / "one", ["only.png"])
    single = build("data", {"type": "image_folder", "path": str(tmp_path / "one")}, split="all")
    assert single.item_names == ["only.png"]

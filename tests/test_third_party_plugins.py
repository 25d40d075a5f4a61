"""Plugins written by an outside author from the documentation, kept in the suite and run
through the contract kits, so that a change of the plugin API that breaks them fails here:

* ``third_party/shear_group.py``, written against the previous release's guide: an
  ``AffineGroup2D`` whose ``distance`` has a key of its own (``shear``) and which sets no
  ``primary_error``;
* the ``.npy`` folder dataset shown in ``docs/plugins.md`` ("A dataset of your own"),
  taken from the page itself, which gets ``limit``, ``transform``, ``storage`` and the
  ``all`` split from the public dataset helpers;
* a factory that refuses its config with ``ConfigError("one clear paragraph")``, as the
  plugin rules say, while a run is being built.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from pydantic import Field
from sklearn.datasets import load_digits

from mcvae_framework import ComponentConfig, ConfigError, build, hookimpl
from mcvae_framework.cli import cli
from mcvae_framework.config.plugins import create_plugin_manager, set_plugin_manager
from mcvae_framework.testing import DatasetContract, LieGroupContract
from third_party import shear_group

ROOT = Path(__file__).resolve().parents[1]


def guide_block(first_line: str) -> str:
    """The python block of docs/plugins.md that starts with ``first_line``."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [block for block in blocks if block.startswith(first_line)]
    assert len(found) == 1, f"docs/plugins.md has {len(found)} python blocks starting with {first_line!r}"
    return found[0]


def npy_folder_plugin() -> types.ModuleType:
    module = types.ModuleType("npy_folder")
    # dont_inherit: the block is compiled as its own file, not under this module's __future__ imports
    code = compile(guide_block("# npy_folder.py"), "docs/plugins.md (npy_folder.py)", "exec", dont_inherit=True)
    exec(code, module.__dict__)
    return module


class PickyEncoderConfig(ComponentConfig):
    type: Literal["picky"] = "picky"
    width: int = Field(4, ge=1)


def make_picky_encoder(config, image_shape):
    # checked where the image shape is known: in the factory, during the run's build
    if config.width < image_shape[-1]:
        raise ConfigError(f"encoder.width {config.width} is narrower than the {image_shape[-1]}-pixel images; "
                          f"set encoder.width to at least {image_shape[-1]}")
    return build("encoder", {"type": "mlp"}, image_shape=image_shape)


class PickyEncoder:
    @hookimpl
    def mcvae_register_encoders(self, register):
        register(PickyEncoderConfig, make_picky_encoder)


@pytest.fixture(scope="module", autouse=True)
def third_party_plugins(tmp_path_factory):
    """The built-ins plus the third-party plugins, on the process-wide plugin manager; the
    .npy folder holds 120 real scikit-learn digits."""
    folder = tmp_path_factory.mktemp("npy")
    for i, image in enumerate(load_digits().images[:120]):
        np.save(folder / f"digit_{i:03d}.npy", image.astype(np.float32))
    for kit in (TestNpyFolderFromTheGuide, TestNpyFolderStreamed):
        kit.dataset_config = {**kit.dataset_config, "path": str(folder)}
    pm = create_plugin_manager(load_entry_points=True)
    pm.register(shear_group, name="shear-from-the-previous-guide")
    pm.register(npy_folder_plugin(), name="npy-folder-from-the-guide")
    pm.register(PickyEncoder(), name="picky-encoder")
    previous = set_plugin_manager(pm)
    yield folder
    set_plugin_manager(previous)


class TestShearFromThePreviousGuide(LieGroupContract):
    group_config = {"type": "shear", "max_shear": 0.3}


def test_the_shear_groups_primary_error_is_its_own_first_key():
    group = build("group", {"type": "shear"})
    assert group.primary_error == "shear" and group.rotation_error is None


class TestNpyFolderFromTheGuide(DatasetContract):
    dataset_config = {"type": "npy_folder", "test_fraction": 0.25, "limit": 40,
                      "transform": {"group": "so2", "seed": 0, "canvas": 12}}
    splits = ("train", "test", "all")


class TestNpyFolderStreamed(DatasetContract):
    dataset_config = {"type": "npy_folder", "test_fraction": 0.25, "storage": "stream",
                      "transform": {"group": "shear", "max_shear": 0.2, "seed": 1}}
    splits = ("train", "test", "all")


def test_the_guides_dataset_gets_the_built_ins_seeded_poses_and_limit(third_party_plugins):
    config = {"type": "npy_folder", "path": str(third_party_plugins), "test_fraction": 0.25,
              "transform": {"group": "so2", "seed": 0, "canvas": 12}}
    streamed = build("data", {**config, "storage": "stream"}, split="train")
    in_memory = build("data", {**config, "storage": "memory"}, split="train")
    assert streamed.split_sizes() == in_memory.split_sizes() == {"train": 90, "test": 30, "all": 120}
    for i in (0, 45, 89):
        a, b = streamed[i], in_memory[i]
        assert a.keys() == b.keys() == {"image", "canonical", "pose"}
        assert np.array_equal(a["pose"].numpy(), b["pose"].numpy())
    limited = build("data", {**config, "limit": 10}, split="train")
    assert len(limited) == 10 and np.array_equal(limited[3]["pose"].numpy(), in_memory[3]["pose"].numpy())
    everything = build("data", config, split="all")
    assert everything.item_names[:2] == ["digit_000.npy", "digit_001.npy"]
    assert sorted(set(everything.item_splits)) == ["test", "train"]


def test_a_factorys_one_paragraph_config_error_names_the_file_and_exits_2(tmp_path):
    config = {
        "data": {"type": "digits", "limit": 40},
        "group": {"type": "so2"},
        "encoder": {"type": "picky", "width": 4},
        "decoder": {"type": "mlp"},
        "prior": {"type": "gmm", "n_components": 2},
        "training": {"epochs": 1, "device": "cpu", "progress": False},
    }
    path = tmp_path / "picky.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", str(path), "--out-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, (result.output, result.exception)
    said = " ".join(result.output.split())
    assert str(path) in said and "encoder.width 4 is narrower than the 8-pixel images" in said
    assert "Traceback" not in result.output

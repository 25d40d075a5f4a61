"""``mcvae data show``: sizes, classes and shape printed; a PNG grid of canonical / moved
pairs written; bad configs answered with a message and exit code 2."""

from __future__ import annotations

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from mcvae_framework.cli import cli

SECTIONS = {"group": {"type": "so2"}, "encoder": {"type": "conv"}, "decoder": {"type": "mlp"},
            "prior": {"type": "gmm", "n_components": 10}}


def write_config(tmp_path, data: dict):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"data": data, **SECTIONS}))
    return str(path)


def test_show_prints_sizes_and_writes_pairs_grid(tmp_path):
    config = write_config(tmp_path, {"type": "mnist5k", "limit": 40,
                                     "transform": {"group": "so2", "angle_deg": [-90, 90], "seed": 1, "canvas": 32}})
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["data", "show", config, "--out", str(out), "-n", "12"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "sizes:       train 40, test 40" in text
    assert "image shape: 1 x 32 x 32" in text
    assert "classes:     10 (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in text
    assert "train per class: 0: 4, 1: 4," in text
    assert "transform:   group so2, seed 1, canvas 32, angle_deg=[-90, 90]" in text
    assert "item keys:   image, label, canonical, pose" in text
    # 12 images: 2 blocks of (canonical row + moved row), 8 per row, 2 px padding
    grid = np.asarray(Image.open(out))
    assert grid.shape[:2] == (4 * 34 + 2, 8 * 34 + 2)
    rows = [grid[2 + 34 * r: 34 * (r + 1), 2:34, 0] for r in range(4)]
    assert rows[0].max() > 0 and not np.array_equal(rows[0], rows[1])  # moved differs from canonical


def test_show_test_split_without_transform_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, {"type": "digits"})
    result = CliRunner().invoke(cli, ["data", "show", config, "--split", "test", "--set", "data.limit=16"])
    assert result.exit_code == 0, result.output
    assert "sizes:       train 16, test 16" in result.output and "1 x 8 x 8" in result.output
    assert "transform" not in result.output
    assert not (tmp_path / "data_digits_test.png").exists()  # not into the current folder
    grid = np.asarray(Image.open(tmp_path / "runs" / "experiment" / "data_digits_test.png"))  # the run folder
    assert grid.shape[:2] == (2 * 10 + 2, 8 * 10 + 2)  # 16 images, 8 per row


def test_show_bad_config_is_a_message_not_a_traceback(tmp_path):
    config = write_config(tmp_path, {"type": "mnist5k", "transform": {"group": "se3"}})
    result = CliRunner().invoke(cli, ["data", "show", config])
    assert result.exit_code == 2
    assert "unknown group type 'se3'" in result.output and "Traceback" not in result.output
    missing = write_config(tmp_path, {"type": "arrays", "path": str(tmp_path / "none.npz")})
    result = CliRunner().invoke(cli, ["data", "show", missing])
    assert result.exit_code == 2 and "no file at" in result.output

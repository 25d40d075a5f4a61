"""`mcvae report` and `mcvae evaluate` write the class averages and report.html: a
self-contained page (nothing fetched, text escaped) whose selection command writes exactly
the particles of the kept clusters. The page's behaviour in a real browser is in
tests/test_report_browser.py."""

from __future__ import annotations

import html
import json
import re
import shlex

import mrcfile
import numpy as np
import pytest
import starfile
from click.testing import CliRunner

from mcvae_framework.cli import cli
from tiny_runs import MARKUP_CLASS, MARKUP_FILE, MODEL_SIDE, PIXEL_SIZE, STACK_SIDE


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def page_data(page: str) -> dict:
    block = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


@pytest.fixture(scope="module")
def folder_text(folder_page):
    return folder_page.read_text(encoding="utf-8")


def test_one_card_per_cluster_and_nothing_fetched(folder_text):
    assert folder_text.count('<section class="card"') == 3
    assert "Content-Security-Policy" in folder_text and "default-src 'none'" in folder_text
    # every image is inlined; no address outside the page
    assert not re.search(r"(src|href)=\"(?!data:|#)", folder_text)
    assert "http://" not in folder_text and "https://" not in folder_text
    assert "Confusion matrix" in folder_text and "Training curves" in folder_text


def test_names_that_are_markup_are_escaped(folder_text):
    assert "<img src=x" not in folder_text and "<img src=y" not in folder_text
    assert html.escape(MARKUP_FILE) in folder_text  # a member's caption
    assert html.escape(MARKUP_CLASS) in folder_text  # the confusion matrix's row
    data = page_data(folder_text)  # inside the script block too: no "<" survives
    ids = [i for cluster in data["clusters"] for i in cluster["ids"]]
    assert any(i.endswith(MARKUP_FILE) for i in ids) and data["id_kind"] == "name"


def test_the_page_lists_every_image_once_with_its_cluster(folder_run, folder_text, tmp_path):
    data = page_data(folder_text)
    result = _invoke("predict", folder_run, "--data", folder_run / "config.json", "--out", tmp_path / "p.npz")
    assert result.exit_code == 0, result.output
    npz = np.load(tmp_path / "p.npz")
    for cluster in data["clusters"]:
        assert sorted(cluster["ids"]) == sorted(npz["name"][npz["cluster"] == cluster["cluster"]].tolist())


def test_the_selection_command_writes_exactly_the_kept_clusters(mrc_run, mrc_page):
    data = page_data(mrc_page.read_text(encoding="utf-8"))
    assert data["id_kind"] == "index"
    kept = [c for c in data["clusters"] if c["size"]][:1]
    command = data["command_prefix"] + ",".join(str(c["cluster"]) for c in kept) + data["command_suffix"]
    argv = shlex.split(command)
    assert argv[:2] == ["mcvae", "predict"]
    result = _invoke(*argv[1:])
    assert result.exit_code == 0, result.output
    particles = starfile.read(mrc_run / "selection.star")["particles"]
    written = sorted(particles["rlnImageName"].str.split("@").str[0].astype(int) - 1)
    assert written == sorted(i for c in kept for i in c["ids"])


def test_class_averages_of_a_particle_stack(mrc_run):
    result = _invoke("report", mrc_run, "--split", "test")
    assert result.exit_code == 0, result.output
    summary = json.loads((mrc_run / "class_averages.json").read_text())
    model_pixel = PIXEL_SIZE * STACK_SIDE / MODEL_SIDE  # the model reads Fourier-cropped particles
    assert summary["pixel_size"] == pytest.approx(model_pixel)
    assert sum(row["size"] for row in summary["classes"]) == summary["n_images"] == 30
    with mrcfile.open(mrc_run / "class_averages.mrcs") as handle:
        assert handle.is_image_stack() and handle.data.shape == (3, MODEL_SIDE, MODEL_SIDE)
        assert float(handle.voxel_size.x) == pytest.approx(model_pixel)
    assert (mrc_run / "class_averages.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_writes_the_page_unless_told_not_to(mrc_run):
    (mrc_run / "report.html").unlink(missing_ok=True)
    result = _invoke("evaluate", mrc_run, "--n-actions", "1", "--no-html")
    assert result.exit_code == 0, result.output
    assert not (mrc_run / "report.html").exists()
    result = _invoke("evaluate", mrc_run, "--n-actions", "1")
    assert result.exit_code == 0, result.output
    page = (mrc_run / "report.html").read_text(encoding="utf-8")
    assert page.count('<section class="card"') == 3 and "accuracy" in page


def test_report_of_a_folder_that_is_no_run_is_one_message(tmp_path):
    result = _invoke("report", tmp_path)
    assert result.exit_code == 2 and "not a run folder" in result.output

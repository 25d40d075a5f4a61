"""RELION STAR files from `mcvae predict --out FILE.star`: RELION's convention for the
in-plane angle and the origin, checked against images turned by known angles; the file
read back with starfile equals the predictions; --clusters keeps exactly the chosen ones."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
import torch
from click.testing import CliRunner
from scipy.ndimage import map_coordinates

import mrcfile
from mcvae_framework import build
from mcvae_framework.cli import cli
from mcvae_framework.report.star_export import relion_pose
from tiny_runs import MODEL_SIDE, PIXEL_SIZE, STACK_SIDE


def relion_observation(reference: np.ndarray, psi_deg: float, origin_xy) -> np.ndarray:
    """The particle RELION predicts from ``reference`` for ``rlnAnglePsi`` and the origin
    (pixels), written out from its documented model (Conventions page; Euler_angles2matrix,
    Projector::project, ObservationModel::predictObservation): the reference rotated by
    ``A(psi) = [[cos, sin], [-sin, cos]]`` about pixel (N//2, N//2), x = column and
    y = row from the upper left, then shifted by minus the origin:
    ``particle(q) = reference(A^T (q + origin - c) + c)``. Bilinear, zeros outside."""
    n = reference.shape[-1]
    c = n // 2
    psi = np.radians(psi_deg)
    a = np.array([[np.cos(psi), np.sin(psi)], [-np.sin(psi), np.cos(psi)]])
    rows, cols = np.mgrid[0:n, 0:n].astype(np.float64)
    q = np.stack([cols.ravel(), rows.ravel()])  # (x, y)
    source = a.T @ (q + np.asarray(origin_xy, dtype=np.float64).reshape(2, 1) - c) + c
    return map_coordinates(reference, [source[1], source[0]], order=1, mode="constant").reshape(n, n)


def asymmetric_reference(n: int) -> np.ndarray:
    image = np.zeros((n, n))
    image[n // 4:3 * n // 4, n // 3:n // 3 + 3] = 1.0  # a bar ...
    image[3 * n // 4 - 3:3 * n // 4, n // 3:2 * n // 3 + 2] = 1.0  # ... with a foot: an L
    image[n // 4:n // 4 + 3, 2 * n // 3:2 * n // 3 + 3] = 0.5  # and a dot
    return image


@pytest.mark.parametrize("n", [32, 33])
def test_relion_reproduces_our_moved_image_from_the_exported_angle_and_origin(n):
    # the model's image x = g . x0; RELION, given rlnAnglePsi and the origin we export,
    # predicts the same particle from the same reference x0 (even and odd boxes: the
    # rotation centres differ by half a pixel on even ones)
    group = build("group", {"type": "se2", "angle_deg": [-180, 180], "shift": 0.2})
    reference = asymmetric_reference(n)
    for tau in ([0.6, 0.0, 0.0], [-2.1, 0.15, -0.1], [2.9, -0.2, 0.05]):
        g = group.exp(torch.tensor([tau], dtype=torch.float64))
        moved = group.act(torch.from_numpy(reference)[None, None], g)[0, 0].numpy()
        psi, origin = relion_pose(g.numpy(), n)
        predicted = relion_observation(reference, psi[0], origin[0])
        inner = np.s_[3:-3, 3:-3]
        assert np.abs(predicted - moved)[inner].max() < 0.05, (tau, psi, origin)
        # the opposite sense of the angle, or RELION's centre ignored, would not reproduce it
        assert np.abs(relion_observation(reference, -psi[0], origin[0]) - moved)[inner].max() > 0.3
        if n % 2 == 0:
            # RELION turns about pixel N//2, our act about the box middle: without the
            # half-pixel term of the origin the prediction is off
            no_centre = -g.numpy()[0, :2, 2] * n / 2
            assert (np.abs(relion_observation(reference, psi[0], no_centre) - moved)[inner].max()
                    > 2 * np.abs(predicted - moved)[inner].max())


def test_an_image_turned_by_a_known_relion_angle_gets_that_angle_back():
    # RELION turns a reference by a known psi; the pose that our group's own act needs to
    # make that particle (found by a search over half-degree steps) is exported as psi (an
    # odd box: both rotation centres are its middle pixel, so the angle alone makes it)
    n = 33
    reference = torch.from_numpy(asymmetric_reference(n))[None, None]
    group = build("group", {"type": "so2", "angle_deg": [-180, 180]})
    thetas = torch.deg2rad(torch.arange(-180.0, 180.0, 0.5, dtype=torch.float64)).view(-1, 1)
    candidates = group.act(reference.expand(len(thetas), -1, -1, -1).contiguous(), group.exp(thetas))[:, 0].numpy()
    for psi in (30.0, -75.0, 150.0):
        particle = relion_observation(reference[0, 0].numpy(), psi, (0.0, 0.0))
        errors = np.abs(candidates - particle)[:, 4:-4, 4:-4].mean(axis=(1, 2))
        best = thetas[int(errors.argmin())].view(1, 1)
        exported, _ = relion_pose(group.exp(best).numpy(), n)
        assert abs((exported[0] - psi + 180) % 360 - 180) <= 1.0, (psi, exported[0])


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def expected_star_columns(npz, model_side: int, stack_side: int, pixel_size: float):
    """rlnAnglePsi and the origins in Angstrom from `mcvae predict`'s own .npz, by the
    formulas of docs/own-images.md: psi = -theta; origin = -(t N/2 + (I - R) d)."""
    g = npz["pose_matrix"]
    theta = np.arctan2(g[:, 1, 0] - g[:, 0, 1], g[:, 0, 0] + g[:, 1, 1])
    psi = -np.degrees(theta)
    psi = np.where(psi <= -180, psi + 360, psi)
    d = ((model_side - 1) / 2 - model_side // 2) * stack_side / model_side
    r = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
    shift = g[:, :2, 2] * stack_side / 2 + d - r @ np.array([d, d])
    return psi, -shift * pixel_size


def test_star_round_trip_equals_the_predictions(mrc_run, tmp_path):
    data = mrc_run / "config.json"
    result = _invoke("predict", mrc_run, "--data", data, "--out", tmp_path / "all.npz")
    assert result.exit_code == 0, result.output
    result = _invoke("predict", mrc_run, "--data", data, "--out", tmp_path / "all.star")
    assert result.exit_code == 0, result.output
    npz = np.load(tmp_path / "all.npz")
    star = starfile.read(tmp_path / "all.star")
    optics, particles = star["optics"], star["particles"]
    assert optics["rlnImagePixelSize"][0] == pytest.approx(PIXEL_SIZE)
    assert optics["rlnImageSize"][0] == STACK_SIDE
    assert len(particles) == len(npz["cluster"]) == 120
    index = particles["rlnImageName"].str.split("@").str[0].astype(int).to_numpy()
    assert np.array_equal(index, npz["index"] + 1)
    assert particles["rlnImageName"].str.split("@").str[1].map(lambda p: p.endswith("particles.mrcs")).all()
    assert np.array_equal(particles["rlnClassNumber"].to_numpy(), npz["cluster"] + 1)
    psi, origin = expected_star_columns(npz, MODEL_SIDE, STACK_SIDE, PIXEL_SIZE)
    assert np.abs(particles["rlnAnglePsi"].to_numpy() - psi).max() < 1e-3
    assert np.abs(particles["rlnOriginXAngst"].to_numpy() - origin[:, 0]).max() < 1e-3
    assert np.abs(particles["rlnOriginYAngst"].to_numpy() - origin[:, 1]).max() < 1e-3
    chosen = npz["probabilities"][np.arange(120), npz["cluster"]]
    assert np.abs(particles["rlnMaxValueProbDistribution"].to_numpy() - chosen).max() < 1e-5
    assert np.abs(origin).max() > 0.1  # SE(2) shifts: the columns are not trivially zero


def test_a_subset_keeps_exactly_the_chosen_clusters(mrc_run, tmp_path):
    data = mrc_run / "config.json"
    npz_path, star_path = tmp_path / "all.npz", tmp_path / "some.star"
    assert _invoke("predict", mrc_run, "--data", data, "--out", npz_path).exit_code == 0
    npz = np.load(npz_path)
    present = sorted(set(npz["cluster"].tolist()))
    chosen = present[:1] if len(present) > 1 else present
    result = _invoke("predict", mrc_run, "--data", data, "--clusters", ",".join(map(str, chosen)),
                     "--out", star_path, "--pixel-size", "1.5")
    assert result.exit_code == 0, result.output
    particles = starfile.read(star_path)["particles"]
    wanted = np.isin(npz["cluster"], chosen)
    assert set(particles["rlnClassNumber"]) == {c + 1 for c in chosen}
    index = particles["rlnImageName"].str.split("@").str[0].astype(int).to_numpy() - 1
    assert np.array_equal(index, npz["index"][wanted])
    assert starfile.read(star_path)["optics"]["rlnImagePixelSize"][0] == pytest.approx(1.5)
    # the same selection in a table
    assert _invoke("predict", mrc_run, "--data", data, "--clusters", ",".join(map(str, chosen)),
                   "--out", tmp_path / "some.csv").exit_code == 0
    assert len((tmp_path / "some.csv").read_text().splitlines()) == wanted.sum() + 1


def test_images_that_are_not_a_stack_are_written_as_one_beside_the_star_file(folder_run, tmp_path):
    out = tmp_path / "particles.star"
    result = _invoke("predict", folder_run, "--data", folder_run / "config.json", "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    particles = starfile.read(out)["particles"]
    with mrcfile.open(tmp_path / "particles.mrcs") as handle:
        assert handle.data.shape[0] == len(particles)
        assert float(handle.voxel_size.x) == pytest.approx(1.0)
    assert particles["rlnImageName"].iloc[0].startswith("000001@")


@pytest.mark.parametrize("clusters, message", [("1,x", "comma-separated"), ("99", "no cluster 99")])
def test_bad_cluster_lists_are_one_message(mrc_run, tmp_path, clusters, message):
    result = _invoke("predict", mrc_run, "--data", mrc_run / "config.json", "--clusters", clusters,
                     "--out", tmp_path / "x.star")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_selection_that_holds_no_image_is_refused():
    from mcvae_framework.errors import DataError
    from mcvae_framework.report.star_export import keep_clusters

    result = {"cluster": np.array([0, 0, 1]), "probabilities": np.full((3, 3), 1 / 3), "index": np.arange(3)}
    assert keep_clusters(result, [1])["index"].tolist() == [2]
    with pytest.raises(DataError, match="no image of the data is in these clusters"):
        keep_clusters(result, [2])


def users_star_file(folder, n: int = 40):
    """A RELION 3.1 particle file over two stacks of 12 px particles (in Extract/), with
    optics and CTF columns, its particles listed out of stack order."""
    import pandas as pd

    from tiny_runs import digit_particles

    images, _ = digit_particles(n=n, side=MODEL_SIDE)
    (folder / "Extract").mkdir(parents=True)
    for name, part in (("a.mrcs", images[:25]), ("b.mrcs", images[25:])):
        with mrcfile.new(folder / "Extract" / name) as handle:
            handle.set_data(part)
            handle.set_image_stack()
    order = np.random.default_rng(0).permutation(n)
    names = [f"{i + 1}@Extract/a.mrcs" if i < 25 else f"{i - 24}@Extract/b.mrcs" for i in order]
    particles = pd.DataFrame({"rlnImageName": names, "rlnDefocusU": 10000.0 + order, "rlnOpticsGroup": 1,
                              "rlnMicrographName": [f"mic{i % 3}.mrc" for i in order]})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnImagePixelSize": [2.5], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                           "rlnAmplitudeContrast": [0.1], "rlnImageSize": [MODEL_SIDE], "rlnImageDimensionality": [2]})
    path = folder / "particles.star"
    starfile.write({"optics": optics, "particles": particles}, path)
    return path, images[order]


def test_a_users_star_file_is_read_and_its_columns_carried_through(mrc_run, tmp_path):
    path, images = users_star_file(tmp_path)
    dataset = build("data", {"type": "star", "path": str(path), "normalize": "none"}, split="all")
    from mcvae_framework.runtime.data import dataset_tensors

    assert np.allclose(dataset_tensors(dataset)["image"][:, 0].numpy(), images, atol=1e-6)  # in the file's order
    out = tmp_path / "classified.star"
    result = _invoke("predict", mrc_run, "--data", path, "--out", out)  # .star is read by the star data
    assert result.exit_code == 0, result.output
    written, given = starfile.read(out), starfile.read(path)
    particles = written["particles"]
    assert particles["rlnImageName"].tolist() == given["particles"]["rlnImageName"].tolist()
    assert np.array_equal(particles["rlnDefocusU"], given["particles"]["rlnDefocusU"])
    assert particles["rlnMicrographName"].tolist() == given["particles"]["rlnMicrographName"].tolist()
    assert {"rlnClassNumber", "rlnAnglePsi", "rlnOriginXAngst", "rlnMaxValueProbDistribution"} <= set(particles)
    assert written["optics"]["rlnVoltage"][0] == 300.0 and written["optics"]["rlnImagePixelSize"][0] == 2.5


def test_a_star_file_whose_stacks_are_missing_is_one_message(tmp_path):
    from mcvae_framework.errors import DataError

    path, _ = users_star_file(tmp_path)
    (tmp_path / "Extract" / "b.mrcs").unlink()
    with pytest.raises(DataError, match="b.mrcs named in rlnImageName is not at .*project_dir"):
        build("data", {"type": "star", "path": str(path)}, split="all")

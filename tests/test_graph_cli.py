"""``mcvae graph``: the invariant clustering alone, rows in the data's order, once under torchrun."""

from __future__ import annotations

import csv
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_digits

from mcvae_framework.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

#: images of two digits (0 and 1), in a seeded shuffled order
PER_CLASS = 60


def write_data(folder) -> np.ndarray:
    """An ``.npy`` of 0s and 1s in a shuffled order; returns each row's digit."""
    digits = load_digits()
    pick = np.concatenate([np.flatnonzero(digits.target == d)[:PER_CLASS] for d in (0, 1)])
    order = np.random.default_rng(5).permutation(len(pick))
    np.save(folder / "digits.npy", (digits.images[pick[order]] / 16.0).astype(np.float32))
    return digits.target[pick[order]]


def write_config(folder, **graph) -> str:
    config = {
        "data": {"type": "arrays", "path": "digits.npy", "test_fraction": 0.25},
        "group": {"type": "so2", "angle_deg": [-30, 30]},
        "encoder": {"type": "mlp"}, "decoder": {"type": "mlp"},
        "prior": {"type": "gmm", "n_components": 2}, "model": {"z_cluster_dim": 2},
        "graph": {"neighbours": 6, "search_size": 5, "kmeans_restarts": 3, **graph},
        "training": {"seed": 0, "progress": False, "out_dir": str(folder / "run")},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_mcvae_graph_writes_one_row_per_image_in_the_datas_order(tmp_path):
    truth = write_data(tmp_path)
    config = write_config(tmp_path)
    result = CliRunner().invoke(cli, ["graph", config, "--out", str(tmp_path / "g.csv")])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "g.csv")
    assert list(rows[0]) == ["index", "split", "cluster", "confident", "angle", "pose_trust"]
    assert all(0 <= float(r["pose_trust"]) <= 1 for r in rows)
    assert [int(r["index"]) for r in rows] == list(range(len(truth)))
    clusters = np.array([int(r["cluster"]) for r in rows])
    # 0s and 1s are told apart; row i's cluster is the cluster of the data's image i
    assert (clusters == truth).all() or (clusters == 1 - truth).all()
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(abs(float(r["angle"])) <= np.pi for r in rows)
    assert "neighbour search: exact" in result.output and "eigensolver arpack" in result.output

    # one split: its images only, in the order of their positions in the file
    result = CliRunner().invoke(cli, ["graph", config, "--split", "test", "--out", str(tmp_path / "t.npz"),
                                      "--set", "graph.neighbour_search=exact"])
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "t.npz")
    assert len(saved["index"]) == len(truth) // 4 and (np.diff(saved["index"]) > 0).all()
    assert saved["neighbours"].shape == (len(saved["index"]), 6) and "neighbour_search" in str(saved["settings_json"])


def test_mcvae_graph_refuses_an_unknown_output_format_with_exit_2(tmp_path):
    write_data(tmp_path)
    result = CliRunner().invoke(cli, ["graph", write_config(tmp_path), "--out", str(tmp_path / "g.txt")])
    assert result.exit_code == 2 and "unknown output format '.txt'" in result.output
    assert "Traceback" not in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graph_as_rank(rank: int, port: int, config: str, out: str, folder: str) -> None:
    """One torchrun-like process running ``mcvae graph``; every build of the graph is recorded."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    from mcvae_framework.train import graph_build

    build = graph_build.invariant_graph_clusters

    def recorded(*args, **kwargs):
        with open(os.path.join(folder, "builds.txt"), "a") as handle:
            handle.write(f"{rank}\n")
        return build(*args, **kwargs)

    graph_build.invariant_graph_clusters = recorded
    received = []
    gather = graph_build.build_invariant_graph

    def keep(*args, **kwargs):
        received.append(gather(*args, **kwargs))
        return received[-1]

    graph_build.build_invariant_graph = keep  # what each process ends up holding
    result = CliRunner().invoke(cli, ["graph", config, "--out", out])
    assert result.exit_code == 0, result.output
    torch.save(received[0].labels, os.path.join(folder, f"labels{rank}.pt"))


def test_under_two_torchrun_processes_the_graph_is_built_once_and_written_once(tmp_path):
    write_data(tmp_path)
    config = write_config(tmp_path)
    out = tmp_path / "g.csv"
    mp.spawn(graph_as_rank, args=(free_port(), config, str(out), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "builds.txt").read_text().split() == ["0"], "rank 0 alone builds the graph"
    labels = [torch.load(tmp_path / f"labels{rank}.pt") for rank in (0, 1)]
    assert torch.equal(labels[0], labels[1]), "every process receives rank 0's graph"
    assert [int(r["cluster"]) for r in read_rows(out)] == labels[0].tolist()

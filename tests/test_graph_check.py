"""A model never worse than its graph, and a graph with no more pieces than clusters:
the graph's pieces bridged by their most similar pairs, the label-free checks of a model
against its graph, the repair of a forced drift, and what train.log and report.json say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from torch import nn

from mcvae_framework.graph.spectral import bridge_components, modularity, spectral_clusters, symmetric_graph
from mcvae_framework.report.evaluation import clustering_metrics, evaluate_run
from mcvae_framework.train import graph_check as graph_check_module
from mcvae_framework.train.graph_check import GraphKeeper, matched_agreement, percent, separated_latents, unanimous
from mcvae_framework.train.trainer import Trainer

from test_guidance import guided_config

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def ring_pieces(sizes, k: int, seed: int = 0):
    """Neighbour lists of ``len(sizes)`` pieces, each a ring where every node's neighbours are the
    next ``k`` nodes of its own piece (so no list crosses a piece), with reserve lists of
    ``3k`` neighbours whose extra entries point into other pieces at given similarities."""
    offsets = np.cumsum([0] + list(sizes))
    n = offsets[-1]
    piece = np.repeat(np.arange(len(sizes)), sizes)
    reserve = np.zeros((n, 3 * k), dtype=np.int64)
    similarity = np.zeros((n, 3 * k), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for p, (start, size) in enumerate(zip(offsets[:-1], sizes)):
        for i in range(size):
            reserve[start + i, :k] = start + (i + 1 + np.arange(k)) % size
            similarity[start + i, :k] = 0.99 - 0.001 * np.arange(k)
            others = rng.choice(np.flatnonzero(piece != p), 2 * k, replace=False)
            reserve[start + i, k:] = others
            similarity[start + i, k:] = 0.2
    return reserve, similarity, piece


def test_a_graph_with_more_pieces_than_clusters_is_bridged_to_the_right_clusters():
    # four pieces for three classes: class 0 fell apart into pieces 0 and 1, whose members are
    # each other's most similar images across pieces (0.9); the other pieces meet at 0.2
    k = 5
    reserve, similarity, piece = ring_pieces([60, 60, 120, 120], k)
    for i in range(0, 60, 6):  # some of piece 0's reserve entries are piece 1's images, and back
        reserve[i, k], similarity[i, k] = 60 + i, 0.9
        reserve[60 + i, k], similarity[60 + i, k] = i, 0.9
    order = np.argsort(-similarity, axis=1, kind="stable")  # reserve lists are sorted, best first
    reserve, similarity = np.take_along_axis(reserve, order, 1), np.take_along_axis(similarity, order, 1)
    neighbours = reserve[:, :k]  # the graph keeps the k best: all within their piece (0.99 > 0.9)
    truth = np.array([0] * 120 + [1] * 120 + [2] * 120)

    edges, before, after = bridge_components(neighbours, reserve, similarity, n_clusters=3)
    assert (before, after) == (4, 3) and len(edges) == 1
    assert {piece[edges[0, 0]], piece[edges[0, 1]]} == {0, 1}  # the most similar pieces were joined
    labels, _ = spectral_clusters(symmetric_graph(neighbours, edges), 3, embedding_dim=6, seed=0)
    assert clustering_metrics(truth, labels)["accuracy"] == 1.0
    # without the bridge the spectral embedding sees four pieces, equally far apart: which two of them
    # k-means joins is left to the eigensolver's basis (a class is split on most machines, not all)
    assert connected_components(symmetric_graph(neighbours), directed=False)[0] == 4
    assert connected_components(symmetric_graph(neighbours, edges), directed=False)[0] == 3


def test_modularity_prefers_the_partition_along_the_graph_communities():
    k = 4
    reserve, _, piece = ring_pieces([50, 50, 50], k)
    graph = symmetric_graph(reserve[:, :k])
    shuffled = np.random.default_rng(0).permutation(piece)
    merged = np.where(piece == 2, 1, piece)
    assert modularity(graph, piece) > modularity(graph, merged) > modularity(graph, shuffled)
    assert modularity(graph, piece) == pytest.approx(1 - 3 * (1 / 3) ** 2)  # no edge crosses a piece


def test_agreement_is_read_after_the_best_matching_and_on_unanimous_images():
    graph = np.array([0, 0, 0, 1, 1, 1])
    assert matched_agreement(graph, np.array([1, 1, 1, 0, 0, 0]), 2) == 1.0  # names of clusters do not matter
    assert matched_agreement(graph, np.array([0, 0, 0, 0, 0, 0]), 2) == 0.5
    neighbours = np.array([[1, 2], [0, 2], [0, 3], [4, 5], [3, 5], [3, 4]])
    assert unanimous(graph, neighbours).tolist() == [True, True, False, True, True, True]


def test_separated_latents_give_each_cluster_its_own_place():
    latents = torch.randn(300, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    labels = torch.arange(3).repeat_interleave(100)
    moved = separated_latents(latents, labels, 3, seed=0)
    centres = torch.stack([moved[labels == c].mean(0) for c in range(3)])
    assert torch.cdist(centres, centres)[~torch.eye(3, dtype=torch.bool)].min() > 3 * latents.std()


def three_clusters(size: int):
    """A graph of three clusters of ``size`` images each, every image's neighbours the first four of
    its cluster (every image unanimous): its labels and its neighbours."""
    graph = np.repeat(np.arange(3), size)
    return graph, np.stack([np.flatnonzero(graph == g)[:4] for g in graph])


def test_a_forced_drift_is_repaired_and_the_healthiest_state_kept():
    graph, neighbours = three_clusters(20)
    keeper = GraphKeeper(graph, neighbours, 3, max_repairs=1)
    model = nn.Linear(2, 2)
    healthy_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert keeper.after_epoch(1, graph, model, last=False).healthy
    with torch.no_grad():
        model.weight.add_(1.0)  # training moved on, and drifted
    drifted = np.zeros_like(graph)  # every image in one cluster: two empty components
    check = keeper.after_epoch(2, drifted, model, last=False)
    assert not check.healthy and check.empty_components == [1, 2] and check.action == "repaired"
    assert torch.equal(model.weight, healthy_state["weight"])  # back to the state of epoch 1
    with torch.no_grad():
        model.weight.add_(1.0)
    assert keeper.after_epoch(3, drifted, model, last=False).action == ""  # no repairs left: noted only
    assert keeper.after_epoch(4, drifted, model, last=True).action == "restored"  # the run ends healthy
    assert torch.equal(model.weight, healthy_state["weight"])
    summary = keeper.summary()
    assert summary["repairs"] == 1 and summary["restored_epoch"] == 4
    assert [c["action"] for c in summary["checks"]] == ["", "repaired", "", "restored"]
    restored = GraphKeeper(graph, neighbours, 3)
    restored.load_state_dict(keeper.state_dict())  # a resumed run keeps its checks and kept state
    assert restored.repairs == 1 and restored.best["epoch"] == 1


def test_a_drift_forced_during_training_is_repaired_and_reported(tmp_path, monkeypatch):
    run = tmp_path / "run"
    config = guided_config(run, epochs=3, pretrain_epochs=1)
    real = graph_check_module.cluster_probabilities
    calls = {"n": 0}

    def drifting(model, images, device):
        calls["n"] += 1
        probabilities = real(model, images, device)
        if calls["n"] == 3:  # the check after the second ELBO epoch sees a collapsed model
            probabilities = torch.zeros_like(probabilities)
            probabilities[:, 0] = 1.0
        return probabilities

    monkeypatch.setattr(graph_check_module, "cluster_probabilities", drifting)
    Trainer(config, console=False).run()
    log = (run / "train.log").read_text()
    assert "repaired: back to its state after epoch" in log
    report = evaluate_run(run)
    checks = report["graph"]["model_checks"]["checks"]
    forced = checks[2]  # the check after epoch 3: one cluster took every image
    assert forced["empty_components"] == [1, 2] and forced["action"] == "repaired"
    assert report["graph"]["model_checks"]["repairs"] >= 1
    assert checks[-1]["healthy"] or checks[-1]["action"] == "restored"  # the run ends at or near its graph
    assert report["collapse"]["empty_components"] == 0
    json.loads((run / "report.json").read_text())["graph"]["model_checks"]


def test_the_neighbour_consensus_averages_an_image_with_its_graph_neighbours():
    from mcvae_framework.report.consensus import neighbour_consensus

    probabilities = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.1, 0.9]])
    neighbours = torch.tensor([[0, 2], [0, 2], [0, 1], [1, 2]])  # image 1 sits among cluster 0
    agreed = neighbour_consensus(probabilities, neighbours)
    torch.testing.assert_close(agreed[1], (probabilities[1] + probabilities[0] + probabilities[2]) / 3)
    assert agreed.argmax(1).tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(agreed.sum(1), torch.ones(4))


def test_the_neighbour_consensus_refuses_a_graph_of_other_images():
    from mcvae_framework.report.consensus import neighbour_consensus

    with pytest.raises(ValueError, match="3 rows of probabilities for a graph of 4 images"):
        neighbour_consensus(torch.full((3, 2), 0.5), torch.zeros(4, 2, dtype=torch.long))


def test_a_run_that_ends_short_of_its_graph_ends_with_its_best_agreeing_state():
    graph, neighbours = three_clusters(20)
    keeper = GraphKeeper(graph, neighbours, 3)
    model = nn.Linear(2, 2)
    wobbly = graph.copy()
    wobbly[:6] = 1  # 90% agreement: healthy, but short of the graph
    assert keeper.after_epoch(1, graph, model, last=False).healthy  # the best state: full agreement
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    check = keeper.after_epoch(2, wobbly, model, last=True)
    assert check.healthy and check.action == "restored" and torch.equal(model.weight, best["weight"])
    # a run that ends close to its graph keeps its last state
    labels, neighbours = three_clusters(200)
    keeper = GraphKeeper(labels, neighbours, 3)
    keeper.after_epoch(1, labels, model, last=False)
    nearly = labels.copy()
    nearly[0] = 1  # 99.8% agreement
    assert keeper.after_epoch(2, nearly, model, last=True).action == ""


def test_a_repair_that_leaves_the_model_agreeing_less_is_undone():
    """A model still learning the graph's clusters (80% agreement, below the 90% health line)
    is re-seeded; when the repair leaves it agreeing on fewer images than before, its state
    from before the repair comes back and the check says so. A repair that helps is kept."""
    graph, neighbours = three_clusters(20)
    learning = graph.copy()
    learning[::5] = (learning[::5] + 1) % 3  # 80% agreement
    keeper = GraphKeeper(graph, neighbours, 3)
    model = nn.Linear(2, 2)
    check = keeper.after_epoch(1, learning, model, last=False)
    assert not check.healthy and check.action == "reseeded"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # what the re-seeding and teaching did
    assert keeper.undo_if_worse(model, before, agreement=0.5)
    assert torch.equal(model.weight, before["weight"]) and keeper.checks[-1].action == "reseeded, undone"
    assert keeper.summary()["checks"][-1]["action"] == "reseeded, undone"
    check = keeper.after_epoch(2, learning, model, last=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not keeper.undo_if_worse(model, before, agreement=0.95)  # it helped: kept
    assert not torch.equal(model.weight, before["weight"]) and keeper.checks[-1].action == "reseeded"


def test_the_self_label_weight_doubles_for_every_check_short_of_the_target_up_to_its_cap():
    graph, neighbours = three_clusters(40)
    keeper = GraphKeeper(graph, neighbours, 3)
    model = nn.Linear(2, 2)
    short = graph.copy()
    short[::20] = (short[::20] + 1) % 3  # 95% of the unanimous images kept
    scales = []
    for epoch, clusters in enumerate([short, graph, short, short], start=1):
        keeper.after_epoch(epoch, clusters, model, last=False)
        scales.append(keeper.self_label_scale(0.99))
    assert scales == [2, 2, 4, 4]  # a check at the target leaves it as it is; the cap holds it at 4
    assert graph_check_module.MAX_SELF_LABEL_SCALE == 4 and keeper.self_label_scale(0.9) == 1


def test_a_run_below_its_self_label_target_trains_on_with_a_doubled_weight_and_resumes_with_it(tmp_path,
                                                                                                   monkeypatch):
    run = tmp_path / "run"
    config = guided_config(run, epochs=3, pretrain_epochs=1, self_label_target=1.0)
    real = graph_check_module.cluster_probabilities

    def one_in_ten_elsewhere(model, images, device):
        probabilities = real(model, images, device)
        probabilities[::10] = probabilities[::10].roll(1, dims=1)  # some unanimous images leave their cluster
        return probabilities

    monkeypatch.setattr(graph_check_module, "cluster_probabilities", one_in_ten_elsewhere)
    trainer = Trainer(config, console=False)
    trainer.run()
    checks = evaluate_run(run)["graph"]["model_checks"]["checks"]
    assert all(check["core_agreement"] < 1.0 for check in checks)  # the end of pretraining and 3 ELBO epochs
    assert [check["self_label_weight"] for check in checks] == [10.0, 20.0, 20.0, 20.0]  # 5 doubled, capped at 4x
    assert trainer.loss_module.loss_config.self_label_weight == 20.0
    assert trainer.config.loss.self_label_weight == 5.0  # the config itself is left as it was
    log_text = (run / "train.log").read_text()
    assert "the self-labelling weight is now 20 (4 times loss.self_label_weight)" in log_text
    assert log_text.count("the self-labelling weight stays at 20 (4 times") == 2  # at its cap, not raised again
    weights = []  # the weight a resumed run trains on with, before its next epoch
    monkeypatch.setattr(Trainer, "_train", lambda self: weights.append(self.loss_module.loss_config.self_label_weight))
    Trainer({**config, "training": {**config["training"], "epochs": 4}}, resume=True, console=False).run()
    assert weights == [20.0]  # where the run had got to, not the configured 5


def test_a_self_label_target_without_the_self_labelling_term_is_refused(tmp_path):
    from mcvae_framework.config.experiment import validate_config

    with pytest.raises(ValueError, match="self_label_target raises the self-labelling term's weight, but "
                                         "self_label_weight is 0.0"):
        validate_config(guided_config(tmp_path / "run", self_label_weight=0.0, self_label_target=0.99))


def test_train_log_is_written_after_a_library_silenced_existing_loggers(tmp_path):
    """Importing ASPIRE runs ``logging.config`` with ``disable_existing_loggers``, which
    silences every logger made before it; a run started afterwards in the same process must
    still write its train.log."""
    import logging

    from mcvae_framework.train.run_logging import RunLog

    chatty = logging.getLogger("mcvae_framework.train.trainer")
    chatty.disabled = True  # what disable_existing_loggers does (dictConfig itself would reset pytest's handlers)
    run_log = RunLog()
    run_log.open(tmp_path / "train.log", console=False)
    try:
        chatty.info("the graph chose its settings")
    finally:
        run_log.close()
    assert "the graph chose its settings" in (tmp_path / "train.log").read_text()


def test_the_checks_never_round_a_shortfall_up_to_a_full_agreement():
    assert percent(1.0) == "100.0%"
    assert percent(0.953) == "95.3%"
    assert percent(3199 / 3200) == "99.97%"  # one image of 3,200 elsewhere
    assert percent(29999 / 30000) == "99.997%"

"""The field's own rotation-invariant 2D classifier as a peer row: ASPIRE's ``RIRClass2D``
(Zhao, Shkolnisky & Singer 2014: steerable PCA of the particles, bispectrum-like rotational
invariants, nearest neighbours with mirror images compared too), then two ways to turn its
output into as many clusters as classes:

* ``aspire_spectral``: scikit-learn's ``SpectralClustering`` of its own symmetrised
  nearest-neighbour graph (``n_nbor`` neighbours);
* ``aspire_kmeans``: k-means on its bispectrum features.

    python benchmarks/aspire_peer.py STACK.mrcs LABELS.npy [--neighbours 10]

ASPIRE is an optional extra (``pip install -e ".[peers]"``), never a core dependency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def quiet_aspire() -> None:
    """ASPIRE writes a log folder into the working directory and draws progress bars: point
    its configuration (read once, at import, from ``$ASPIREDIR/config.yaml``) at a
    temporary folder instead, before it is imported."""
    if "aspire" in sys.modules or "ASPIREDIR" in os.environ:
        return
    folder = Path(tempfile.mkdtemp(prefix="aspire_"))
    (folder / "config.yaml").write_text(f"logging:\n  log_dir: {folder / 'logs'}\n  tqdm_disable: True\n"
                                        "  console_level: WARNING\n")
    os.environ["ASPIREDIR"] = str(folder)


def aspire_rows(images: np.ndarray, labels: np.ndarray, n_classes: int, *, neighbours: int = 10,
                pixel_size: float = 1.0, seed: int = 0, score_on: np.ndarray | None = None,
                downsample: int | None = None) -> list[dict]:
    """Both peer rows for one ``(N, L, L)`` stack: method, accuracy, NMI, seconds.

    :param score_on: the positions of the images to score (e.g. the model's test split); all
        of the stack is classified, as the model's transductive run clusters all of it.
    :param downsample: Fourier-crop the particles to this size first (ASPIRE's own
        ``downsample``), as the model's data section does: both then see the same pixels.
    """
    quiet_aspire()
    import scipy.sparse
    from aspire.classification import RIRClass2D
    from aspire.source import ArrayImageSource
    from sklearn.cluster import KMeans, SpectralClustering

    from mcvae_framework.report.evaluation import clustering_metrics

    start = time.perf_counter()
    source = ArrayImageSource(images.astype(np.float32), pixel_size=pixel_size)
    if downsample and downsample < images.shape[-1]:
        source = source.downsample(downsample)
    classifier = RIRClass2D(source, n_nbor=neighbours, seed=seed, large_pca_implementation="legacy",
                            nn_implementation="legacy", bispectrum_implementation="legacy")
    captured = {}
    nn_classification = classifier.nn_classification

    def keep_features(coef_b, coef_b_r):  # the bispectrum features, for the k-means row
        captured["features"] = np.asarray(coef_b)
        return nn_classification(coef_b, coef_b_r)

    classifier.nn_classification = keep_features
    classes, _reflections, _distances = classifier.classify()
    classify_seconds = time.perf_counter() - start

    n = len(images)
    neighbour_lists = np.asarray(classes)[:, 1:]  # column 0 is the image itself
    graph = scipy.sparse.csr_matrix((np.ones(neighbour_lists.size), (np.repeat(np.arange(n), neighbour_lists.shape[1]),
                                     neighbour_lists.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T)
    tic = time.perf_counter()
    spectral = SpectralClustering(n_clusters=n_classes, affinity="precomputed", random_state=seed,
                                  assign_labels="kmeans").fit_predict(graph)
    spectral_seconds = classify_seconds + time.perf_counter() - tic
    features = captured["features"]
    features = features.reshape(features.shape[0], -1) if features.shape[0] == n else features.reshape(-1, n).T
    features = np.concatenate([features.real, features.imag], axis=1) if np.iscomplexobj(features) else features
    tic = time.perf_counter()
    kmeans = KMeans(n_clusters=n_classes, n_init=10, random_state=seed).fit_predict(features)
    kmeans_seconds = classify_seconds + time.perf_counter() - tic
    rows = []
    scored = np.arange(n) if score_on is None else np.asarray(score_on)
    for method, clusters, seconds in (("aspire_spectral", spectral, spectral_seconds),
                                      ("aspire_kmeans", kmeans, kmeans_seconds)):
        metrics = clustering_metrics(np.asarray(labels)[scored], np.asarray(clusters)[scored], n_classes)
        rows.append({"method": method, "accuracy": metrics["accuracy"], "nmi": metrics["nmi"], "seconds": seconds})
    return rows


def main(argv=None) -> None:
    import mrcfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack")
    parser.add_argument("labels")
    parser.add_argument("--neighbours", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images = np.asarray(mrcfile.read(args.stack), dtype=np.float32)
    labels = np.load(args.labels)
    for row in aspire_rows(images, labels, int(labels.max()) + 1, neighbours=args.neighbours, seed=args.seed):
        print(f"{row['method']}: accuracy {row['accuracy']:.3f}, NMI {row['nmi']:.3f}, {row['seconds']:.0f} s")


if __name__ == "__main__":
    main()

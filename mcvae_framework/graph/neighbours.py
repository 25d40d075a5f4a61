"""The invariant graph's neighbour search: exact for small sets, approximate for large ones.

Both answer the same question: for every image ``i``, the ``k`` other images ``j`` with the
largest pose-invariant similarity ``s(i, j) = max_m <reference_i, moved_{m, j}>`` (the rows
are unit vectors, so ``s`` is the best cosine over the search poses ``m``).

* **exact** (:func:`exact_neighbours`): every pair, one chunk of rows at a time; only the
  chunk's ``(rows, N)`` running maximum is held, never an ``N x N`` matrix. Its work grows as
  ``N^2 * poses``: 70,000 images take minutes on two cores, a million would take a day.
* **approximate** (:func:`approximate_neighbours`): an inverted-file index (faiss ``IVF``,
  Jegou et al.'s coarse quantiser: k-means cells, a query scans only the ``nprobe`` nearest
  cells) over the ``M x N`` moved copies. Each image asks it for a few times ``k`` moved
  copies with their exact inner products; a copy names an image and a pose, an image counts
  with its best copy found, and the best ``k`` images are kept. Built and queried in chunks,
  added one pose at a time. On a
  GPU the index moves there when faiss has GPU support. Without faiss, pynndescent's
  nearest-neighbour descent builds the same candidate lists.

:func:`neighbour_search` picks between them (``method="auto"``: exact up to
:data:`APPROXIMATE_ABOVE` images, where it still takes seconds) and logs what it chose.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger("mcvae_framework.graph.neighbours")

#: ``method="auto"`` searches exactly up to this many images, approximately above.
APPROXIMATE_ABOVE = 20_000
#: candidate moved copies asked of the index per image, as a multiple of ``k`` (several of
#: them are the same image at neighbouring poses, and a few the image itself).
OVERSAMPLE = 4
#: IVF cells probed per query: at 70,000 rotated Fashion-MNIST images (13 poses) this gives
#: a recall of the exact neighbour lists above 0.95 (docs/benchmarks.md, graph_scale).
NPROBE = 16


def neighbour_search(reference: torch.Tensor, moved: torch.Tensor, k: int, *, method: str = "auto",
                     approximate_above: int = APPROXIMATE_ABOVE, chunk_size: int = 1024, progress: bool = False,
                     seed: int = 0, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` most similar other images of every image (see the module doc).

    :param reference: ``(N, D)`` unit rows of the prealigned images.
    :param moved: ``(M, N, D)`` unit rows of their copies moved by each search pose.
    :param method: ``"exact"``, ``"approximate"`` or ``"auto"`` (exact up to ``approximate_above`` images).
    :param info: a dict that receives what was chosen (``neighbour_search``, the index settings).
    :returns: ``(indices (N, k) int64, similarities (N, k) float32)``, each row best first.
    """
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"neighbour search: unknown method {method!r}; use 'auto', 'exact' or 'approximate'")
    n = reference.shape[0]
    chosen = method if method != "auto" else ("approximate" if n > approximate_above else "exact")
    start = time.perf_counter()
    if chosen == "exact":
        settings = {"neighbour_search": "exact"}
        result = exact_neighbours(reference, moved, k, chunk_size=chunk_size, progress=progress)
    else:
        settings = {"neighbour_search": "approximate"}
        result = approximate_neighbours(reference, moved, k, chunk_size=chunk_size, progress=progress, seed=seed,
                                        settings=settings)
    settings["neighbour_seconds"] = round(time.perf_counter() - start, 2)
    why = f" (method={method}, {n:,} images {'>' if n > approximate_above else '<='} {approximate_above:,})" \
        if method == "auto" else ""
    log.info("neighbour search: %s%s; %s", chosen, why,
             ", ".join(f"{key} {value}" for key, value in settings.items() if key != "neighbour_search"))
    if info is not None:
        info.update(settings)
    return result


def exact_neighbours(reference: torch.Tensor, moved: torch.Tensor, k: int, *, chunk_size: int = 1024,
                     progress: bool = False, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` most similar other images of every image, every pair compared.

    ``similarity(i, j) = max_m <reference_i, moved_{m, j}>``, computed one chunk of rows at
    a time; only the chunk's ``(rows, N)`` running maximum and its top-k are held.

    :param rows: only these images' lists (default: every image's), e.g. a sample against
        which an approximate search is checked.
    :returns: ``(indices (R, k) int64, similarities (R, k) float32)``, ``R`` rows.
    """
    n = reference.shape[0]
    k = min(k, n - 1)
    rows = torch.arange(n) if rows is None else torch.as_tensor(rows, dtype=torch.int64)
    indices = torch.empty(len(rows), k, dtype=torch.int64)
    values = torch.empty(len(rows), k, dtype=torch.float32)
    bar = tqdm(total=len(rows), desc="invariant graph", unit="img", leave=False, disable=None if progress else True)
    for start in range(0, len(rows), chunk_size):
        own = rows[start:start + chunk_size]
        chunk = reference[own]
        best = chunk @ moved[0].T
        for m in range(1, moved.shape[0]):
            torch.maximum(best, chunk @ moved[m].T, out=best)
        best[torch.arange(len(own)), own] = -float("inf")  # an image is not its own neighbour
        top = best.topk(k, dim=1)
        indices[start:start + len(own)] = top.indices
        values[start:start + len(own)] = top.values.float()
        bar.update(len(own))
    bar.close()
    return indices, values


def approximate_neighbours(reference: torch.Tensor, moved: torch.Tensor, k: int, *, chunk_size: int = 1024,
                           progress: bool = False, seed: int = 0, nprobe: int = NPROBE,
                           settings: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` neighbours from an approximate index over the moved copies.

    Every image asks the index for its :data:`OVERSAMPLE` ``* k + M`` most similar moved
    copies (with their exact inner products); a copy names its image ``j`` and one pose, so
    the similarity of ``j`` is the best of its copies found, and the ``k`` best images other
    than the row's own are kept.

    :param settings: a dict that receives the index's settings (backend, cells, probes).
    :returns: as :func:`exact_neighbours`; a list may miss a neighbour the index did not
        return, or hold one whose best pose it missed (then with a lower similarity). An
        image whose candidates name fewer than ``k`` other images is searched exactly
        (``settings["exact_rows"]`` counts them).
    """
    n, (poses, _, dim) = reference.shape[0], moved.shape
    k = min(k, n - 1)
    want = min(OVERSAMPLE * k + poses, poses * n)
    settings = settings if settings is not None else {}
    ids, similarities = _faiss_candidates(reference, moved, want, chunk_size, progress, seed, nprobe, settings) \
        if _has_faiss() else _nndescent_candidates(reference, moved, want, seed, settings)
    parts = [best_distinct(ids[start:start + 64 * chunk_size] % n, similarities[start:start + 64 * chunk_size], k,
                           invalid=ids[start:start + 64 * chunk_size] < 0, first_row=start)
             for start in range(0, n, 64 * chunk_size)]  # in chunks: the sorts need several copies of their rows
    indices, values = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    # An image whose candidates name fewer than k other images (its own copies and a few
    # images at many poses filled them: near-blank or much repeated images) gets its exact list.
    short = torch.nonzero(torch.isinf(values).any(dim=1)).squeeze(1)
    if len(short):
        indices[short], values[short] = exact_neighbours(reference, moved, k, rows=short, chunk_size=64)
    settings["exact_rows"] = len(short)
    return indices, values


def best_distinct(candidates: np.ndarray, similarities: np.ndarray, k: int, *,
                  invalid: np.ndarray | None = None, first_row: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar distinct images of every row's candidates.

    :param candidates: ``(N, C)`` image indices; repeats, the row itself and the entries
        marked ``invalid`` are allowed (a repeat counts with its largest similarity, the
        others never count).
    :param similarities: ``(N, C)`` their similarities.
    :param first_row: the image index of the first row (its own index is never a neighbour).
    :returns: ``(indices (N, k), similarities (N, k))``, best first; where a row has fewer
        than ``k`` distinct valid candidates, its last similarities are ``-inf``.
    """
    candidates = torch.as_tensor(candidates, dtype=torch.int64)
    values = torch.as_tensor(similarities, dtype=torch.float32).clone()
    rows = torch.arange(first_row, first_row + len(candidates))[:, None]
    bad = candidates == rows
    if invalid is not None:
        bad |= torch.as_tensor(invalid)
    values[bad] = -float("inf")
    # every image's largest similarity first, then its repeats: those are dropped
    by_value = values.argsort(dim=1, descending=True, stable=True)
    ordered = candidates.gather(1, by_value)
    by_image = ordered.argsort(dim=1, stable=True)
    grouped = ordered.gather(1, by_image)
    repeat = torch.zeros_like(grouped, dtype=torch.bool)
    repeat[:, 1:] = grouped[:, 1:] == grouped[:, :-1]
    drop = torch.empty_like(repeat).scatter_(1, by_image, repeat)
    kept = values.gather(1, by_value).masked_fill(drop, -float("inf"))
    if kept.shape[1] < k:  # fewer candidates than places: the rest stay empty
        kept = torch.cat([kept, kept.new_full((len(kept), k - kept.shape[1]), -float("inf"))], dim=1)
        ordered = torch.cat([ordered, ordered.new_zeros((len(ordered), k - ordered.shape[1]))], dim=1)
    top = kept.topk(k, dim=1)
    return ordered.gather(1, top.indices), top.values


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def ivf_cells(vectors: int) -> int:
    """How many IVF cells for ``vectors`` indexed vectors: about ``sqrt`` of their count (the
    usual rule), a power of two, at least 16 and at most 16,384 (k-means of the cells is
    trained on 64 vectors per cell, so training stays seconds)."""
    return int(2 ** np.clip(round(math.log2(math.sqrt(vectors))), 4, 14))


def _faiss_candidates(reference, moved, want, chunk_size, progress, seed, nprobe, settings):
    """``(N, want)`` ids ``m * N + j`` of the moved copies most similar to every row (``-1``:
    none found) and their inner products, from a faiss IVF index over the moved copies."""
    import faiss

    poses, n, dim = moved.shape
    cells = ivf_cells(poses * n)
    quantiser = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantiser, dim, cells, faiss.METRIC_INNER_PRODUCT)
    on_gpu = torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if on_gpu:  # the same index, its lists and searches on the first GPU
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    rng = np.random.default_rng(seed)
    flat = moved.reshape(poses * n, dim)
    sample = np.sort(rng.choice(poses * n, min(poses * n, 64 * cells), replace=False))
    index.cp.seed = seed
    index.train(np.ascontiguousarray(flat[torch.as_tensor(sample)].numpy(), dtype=np.float32))
    bar = tqdm(total=2 * n, desc="approximate neighbours", unit="img", leave=False,
               disable=None if progress else True)
    for m in range(poses):  # added one pose, one chunk at a time: ids m * N + j
        for start in range(0, n, 16 * chunk_size):
            block = np.ascontiguousarray(moved[m, start:start + 16 * chunk_size].numpy(), dtype=np.float32)
            index.add_with_ids(block, np.arange(m * n + start, m * n + start + len(block), dtype=np.int64))
            bar.update(len(block) / poses)
    index.nprobe = min(nprobe, cells)  # an attribute of the CPU and of the GPU IVF index alike
    ids, found = np.empty((n, want), dtype=np.int64), np.empty((n, want), dtype=np.float32)
    for start in range(0, n, 16 * chunk_size):
        rows = np.ascontiguousarray(reference[start:start + 16 * chunk_size].numpy(), dtype=np.float32)
        found[start:start + len(rows)], ids[start:start + len(rows)] = index.search(rows, want)
        bar.update(len(rows))
    bar.close()
    settings.update(backend=f"faiss IVF{cells},Flat{' (GPU)' if on_gpu else ''}", nprobe=min(nprobe, cells),
                    copies_queried=want)
    return ids, found


def _nndescent_candidates(reference, moved, want, seed, settings):
    """As :func:`_faiss_candidates`, from pynndescent (when faiss is missing)."""
    try:
        from pynndescent import NNDescent
    except ImportError:
        raise ImportError(
            "graph.neighbour_search: the approximate search needs faiss (pip install faiss-cpu, or "
            "'mcvae-framework[large]') or pynndescent (pip install pynndescent); install one, or set "
            "graph.neighbour_search: exact") from None
    poses, n, dim = moved.shape
    data = moved.reshape(poses * n, dim).numpy()
    index = NNDescent(data, metric="dot", n_neighbors=30, random_state=seed, low_memory=True)
    ids, distances = index.query(reference.numpy(), k=want)
    settings.update(backend="pynndescent", copies_queried=want)
    return ids, 1.0 - distances  # pynndescent's "dot" distance is 1 - <a, b>


__all__ = ["APPROXIMATE_ABOVE", "approximate_neighbours", "best_distinct", "exact_neighbours", "ivf_cells",
           "neighbour_search"]

"""``mnist`` and ``fashion_mnist``: IDX files under a root folder, read by torchvision.

One code path for every origin of the files. torchvision's ``MNIST`` / ``FashionMNIST``
classes read ``<root>/<ClassName>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
(uncompressed). A root folder is accepted in two layouts:

* torchvision's own (``<root>/<ClassName>/raw/...``, e.g. after ``download: true``): read
  in place;
* the four files directly in the folder, plain or gzipped (as the Debian package
  ``dataset-fashion-mnist`` installs them in ``/usr/share/datasets/fashion-mnist``):
  torchvision's layout is built once in the cache folder (plain files symlinked, ``.gz``
  files decompressed, each written atomically), then read the same way.

Where no root is configured, ``fashion_mnist`` looks in the Debian folder first, then in
the cache folder; ``mnist`` looks in the cache folder. ``download: true`` lets torchvision
fetch missing files into the root (or the cache folder) -- that needs the internet.
The cache folder is ``cache_dir``, else ``$MCVAE_DATA_CACHE``, else
``~/.cache/mcvae_framework/datasets``.

Held in memory, a split is read by torchvision's own class. Streamed (``storage:
stream``), the same uncompressed files in the same layout are memory-mapped after their
headers are checked, and the labels are read by torchvision's ``read_label_file``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path
from functools import partial
from typing import Literal, Optional

import numpy as np
from pydantic import Field, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ALL, SPLITS, DatasetConfig, ScaleToUnit, SourceReader, StreamingImageDataset,
                                        balanced_first, check_split, finish_dataset, limited_size, merge_splits,
                                        merge_streaming, resolve_path, wants_streaming)


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CACHE_ENV = "MCVAE_DATA_CACHE"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_IDX_FILES = [name for pair in IDX_FILES.values() for name in pair]


class IDXDataConfig(DatasetConfig):
    """Fields of the IDX-file datasets (official 60,000 / 10,000 split)."""

    root: Optional[str] = Field(
        None, description="folder holding the IDX files (flat, plain or .gz, or torchvision's <root>/<Class>/raw "
        "layout); default: see the dataset"
    )
    download: bool = Field(False, description="let torchvision download missing files (needs the internet)")
    cache_dir: Optional[str] = Field(
        None, description="where decompressed files and downloads go; default $MCVAE_DATA_CACHE or "
        "~/.cache/mcvae_framework/datasets"
    )

    _resolve_paths = field_validator("root", "cache_dir")(resolve_path)

    def missing_resources(self) -> list[tuple[str, str]]:
        if self.root and not self.download and not Path(self.root).is_dir():
            return [("root", f"no folder at {self.root}; set `root:` to the folder holding the four IDX files "
                             "(a relative path is read from the config file's folder), or set `download: true`")]
        return []


class MNISTConfig(IDXDataConfig):
    """The full MNIST (60,000 train / 10,000 test, 28x28) from IDX files via torchvision."""

    type: Literal["mnist"] = "mnist"


class FashionMNISTConfig(IDXDataConfig):
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28, 10 classes of clothes) from IDX
    files via torchvision; by default the Debian package's ``/usr/share/datasets/fashion-mnist``."""

    type: Literal["fashion_mnist"] = "fashion_mnist"


def cache_folder(config: IDXDataConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "mcvae_framework" / "datasets"


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _atomic_write(target: Path, write) -> None:
    """Write ``target`` through a temporary file in its folder, then rename: a reader (or a
    second process doing the same) never sees a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _mirror_flat_folder(folder: Path, class_name: str, cache: Path) -> Path:
    """torchvision's layout for the IDX files lying directly in ``folder``; returns its root."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    root = cache / f"{class_name}-{key}"
    raw = root / class_name / "raw"
    for name in ALL_IDX_FILES:
        target = raw / name
        if target.exists():
            continue
        source = _find(folder, name)
        try:
            if source.suffix == ".gz":
                def write(tmp, source=source):
                    with gzip.open(source, "rb") as fin, open(tmp, "wb") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
            else:
                def write(tmp, source=source):
                    os.unlink(tmp)
                    os.symlink(source.resolve(), tmp)
            _atomic_write(target, write)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(
                f"could not unpack {source} into {target}: {exc}. Check that the file is a complete IDX "
                f"file (reinstall the data) and that the cache folder {cache} is writable (set cache_dir)."
            ) from None
    return root


def torchvision_root(config: IDXDataConfig, tag: str, class_name: str) -> tuple[Path, Path]:
    """A root folder in torchvision's layout holding all four IDX files (see the module doc),
    and the folder the files came from.

    :raises DataError: saying where it looked and how to get the data.
    """
    cache = cache_folder(config)
    candidates = [Path(config.root).expanduser()] if config.root else []
    if not config.root:
        if tag == "fashion_mnist":
            candidates.append(DEBIAN_FASHION_MNIST)
        candidates.append(cache)
    for folder in candidates:
        if all((folder / class_name / "raw" / name).is_file() for name in ALL_IDX_FILES):
            return folder, folder
        if all(_find(folder, name) for name in ALL_IDX_FILES):
            return _mirror_flat_folder(folder, class_name, cache), folder
    target = candidates[0]
    if config.download:
        _download(class_name, target)
        return target, target
    looked = ", ".join(f"{c} (and {c / class_name / 'raw'})" for c in candidates)
    how = (
        "install the Debian package (`apt-get install dataset-fashion-mnist`, files land in "
        f"{DEBIAN_FASHION_MNIST}), " if tag == "fashion_mnist" else ""
    )
    raise DataError(
        f"{tag}: the IDX files ({', '.join(ALL_IDX_FILES)}, plain or .gz) were not found; looked in {looked}. "
        f"To get them: {how}point `root:` at a folder holding them, or set `download: true` on a machine "
        "with internet (torchvision downloads them)."
    )


def _download(class_name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        getattr(tvd, class_name)(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError offline
        raise DataError(
            f"downloading {class_name} into {root} failed ({type(exc).__name__}: {exc}). Without internet, put "
            "the IDX files in a folder and set `root:` to it (for Fashion-MNIST: `apt-get install "
            "dataset-fashion-mnist`)."
        ) from None


def _unreadable(tag: str, raw: Path, exc: Exception) -> DataError:
    return DataError(
        f"{tag}: could not read the IDX files in {raw} ({type(exc).__name__}: {exc}); they may be "
        "truncated or not IDX files. Reinstall or re-download them."
    )


def _load(config: IDXDataConfig, split: str, tag: str, class_name: str):
    import torchvision.datasets as tvd
    from torchvision.datasets.mnist import read_label_file

    root, origin = torchvision_root(config, tag, class_name)
    raw = root / class_name / "raw"
    try:
        data = getattr(tvd, class_name)(str(root), train=split == "train", download=False)
        other = "test" if split == "train" else "train"
        sizes = {split: len(data.targets), other: len(read_label_file(str(raw / IDX_FILES[other][1])))}
    except Exception as exc:  # a truncated or foreign file: torchvision asserts or raises
        raise _unreadable(tag, raw, exc) from None
    labels = data.targets.numpy()
    # source order: the train file, then the test file
    offset = 0 if split == "train" else sizes["train"]
    return finish_dataset(
        config, split, data.data.unsqueeze(1), labels, scale=255.0, n_classes=len(data.classes),
        sizes=sizes, class_names=list(data.classes), description=f"{tag} (IDX files from {origin})",
        source_indices=offset + np.arange(len(labels)),
    )


def _image_header(path: Path, n_labels: int) -> int:
    """The side of the images of an uncompressed IDX image file, after checking its header
    and length against ``n_labels`` (a memory map would otherwise read past a short file)."""
    with open(path, "rb") as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
    if magic != 0x803 or n != n_labels or h != w or path.stat().st_size != 16 + n * h * w:
        raise ValueError(f"{path.name}: header {magic:#x}, {n} x {h} x {w} for {path.stat().st_size} bytes "
                         f"and {n_labels} labels")
    return h


class _IDXPair:
    """The train and the test image files as one source: positions ``0..n_train-1`` are the
    train file's images, the next ones the test file's (the source order of ``all``)."""

    def __init__(self, paths: tuple[str, str], counts: tuple[int, int], side: int):
        self.maps = [np.memmap(p, dtype=np.uint8, mode="r", offset=16, shape=(n, 1, side, side))
                     for p, n in zip(paths, counts)]
        self.n_train = counts[0]

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        test = positions >= self.n_train  # positions come sorted: train rows first
        return np.concatenate([self.maps[0][positions[~test]], self.maps[1][positions[test] - self.n_train]])


def _load_streaming(config: IDXDataConfig, split: str, tag: str, class_name: str, root: Path, origin: Path,
                    labels: dict[str, np.ndarray], side: int):
    import torchvision.datasets as tvd

    raw = root / class_name / "raw"
    counts = (len(labels["train"]), len(labels["test"]))
    reader = SourceReader((1, side, side), ScaleToUnit(255.0), open_source=partial(
        _IDXPair, tuple(str(raw / IDX_FILES[s][0]) for s in SPLITS), counts, side))
    classes = list(getattr(tvd, class_name).classes)
    sizes = {s: limited_size(len(labels[s]), config.limit) for s in SPLITS}
    parts = {}
    for s, offset in (("train", 0), ("test", counts[0])):
        if split in (s, ALL):
            keep = balanced_first(labels[s], len(labels[s]), config.limit)
            parts[s] = StreamingImageDataset.for_split(
                reader, offset + keep, split=s, transform=config.transform, labels=labels[s][keep],
                n_classes=len(classes), sizes=sizes, class_names=classes,
                description=f"{tag} (IDX files from {origin}, streamed)",
            )
    if split != ALL:
        return parts[split]
    return merge_streaming([parts["train"], parts["test"]], {**sizes, ALL: sum(len(d) for d in parts.values())})


def _load_split(config: IDXDataConfig, split: str, tag: str, class_name: str):
    check_split(split, tag)
    if config.storage != "memory":
        from torchvision.datasets.mnist import read_label_file

        root, origin = torchvision_root(config, tag, class_name)
        raw = root / class_name / "raw"
        try:
            labels = {s: read_label_file(str(raw / IDX_FILES[s][1])).numpy() for s in SPLITS}
            sides = {s: _image_header(raw / IDX_FILES[s][0], len(labels[s])) for s in SPLITS}
            if sides["train"] != sides["test"]:
                raise ValueError(f"train images are {sides['train']} px, test images {sides['test']} px")
        except Exception as exc:  # a truncated or foreign file: torchvision asserts or raises
            raise _unreadable(tag, raw, exc) from None
        n = sum(limited_size(len(labels[s]), config.limit) for s in SPLITS if split in (s, ALL))
        side = sides["train"]
        if wants_streaming(config.storage, n, (1, side, side), config.transform):
            return _load_streaming(config, split, tag, class_name, root, origin, labels, side)
    if split == ALL:
        return merge_splits({s: _load(config, s, tag, class_name) for s in ("train", "test")})
    return _load(config, split, tag, class_name)


def make_mnist(config: MNISTConfig, *, split: str = "train"):
    return _load_split(config, split, "mnist", "MNIST")


def make_fashion_mnist(config: FashionMNISTConfig, *, split: str = "train"):
    return _load_split(config, split, "fashion_mnist", "FashionMNIST")

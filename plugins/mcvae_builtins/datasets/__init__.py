"""Built-in datasets plugin: ``mnist5k``, ``mnist``, ``fashion_mnist``, ``digits``,
``image_folder`` and ``arrays``.

Every dataset is held in memory as float32 tensors (``as_tensors()``), takes ``limit``
(first N per split, class-balanced) and an optional seeded group ``transform`` (see
:mod:`mcvae_builtins.datasets.transform`). Splits: the official one for ``mnist`` and
``fashion_mnist``; a seeded split by ``test_fraction`` (stratified by class where labels
exist) for the others.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .arrays import ArraysConfig, make_arrays
from .bundled import DigitsConfig, MNIST5kConfig, make_digits, make_mnist5k
from .idx import FashionMNISTConfig, MNISTConfig, make_fashion_mnist, make_mnist
from .image_folder import ImageFolderConfig, make_image_folder


@hookimpl
def mcvae_register_datasets(register):
    register(MNIST5kConfig, make_mnist5k)
    register(MNISTConfig, make_mnist)
    register(FashionMNISTConfig, make_fashion_mnist)
    register(DigitsConfig, make_digits)
    register(ImageFolderConfig, make_image_folder)
    register(ArraysConfig, make_arrays)

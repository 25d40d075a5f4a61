"""Built-in datasets plugin: ``mnist5k``, ``mnist``, ``fashion_mnist``, ``digits``,
``image_folder``, ``arrays``, ``mrc`` (cryo-EM particle stacks), ``star`` (a RELION particle
STAR file and the stacks it names) and ``hdf5``.

Every dataset takes ``limit`` (first N per split, class-balanced), an optional seeded
group ``transform`` and ``storage``: held in memory as float32 tensors (``as_tensors()``),
or streamed from its file batch by batch; by default whichever suits its size. They are
made of the public dataset helpers of :mod:`mcvae_framework.interfaces` (``DatasetConfig``,
``build_split``, ...), which a third-party dataset uses the same way. Splits:
the official one for ``mnist`` and ``fashion_mnist``; a seeded split by ``test_fraction``
(stratified by class where labels exist) for the others.
"""

from __future__ import annotations

from mcvae_framework import hookimpl

from .arrays import ArraysConfig, make_arrays
from .bundled import DigitsConfig, MNIST5kConfig, make_digits, make_mnist5k
from .hdf5 import HDF5Config, make_hdf5
from .idx import FashionMNISTConfig, MNISTConfig, make_fashion_mnist, make_mnist
from .image_folder import ImageFolderConfig, make_image_folder
from .mrc import MRCConfig, make_mrc
from .star import StarConfig, make_star


@hookimpl
def mcvae_register_datasets(register):
    register(MNIST5kConfig, make_mnist5k)
    register(MNISTConfig, make_mnist)
    register(FashionMNISTConfig, make_fashion_mnist)
    register(DigitsConfig, make_digits)
    register(ImageFolderConfig, make_image_folder)
    register(ArraysConfig, make_arrays)
    register(MRCConfig, make_mrc)
    register(StarConfig, make_star)
    register(HDF5Config, make_hdf5)

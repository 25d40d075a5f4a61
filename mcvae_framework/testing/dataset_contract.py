"""Contract test kit for dataset plugins.

    from mcvae_framework.testing import DatasetContract

    class TestMyData(DatasetContract):
        dataset_config = {"type": "my_data", "limit": 64}

The kit builds the dataset through :func:`mcvae_framework.build` for every split in
``splits`` (add ``"all"`` when the factory accepts ``split="all"``) and checks item keys,
dtypes, shapes and ranges, ``image_shape`` (``(C, H, W)`` images or ``(C, D, H, W)``
volumes), ``split_sizes`` (``all`` the sum of ``train`` and ``test``), the lengths of the
optional ``item_names``, ``source_indices`` and ``item_splits``, batching with the default
collate function, that building twice gives the same items, and that ``as_tensors()`` (when
offered) agrees with the items. An item's ``pose_component`` (the discrete part of its
pose, for a group with one) is an int64 scalar beside its ``pose``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..config.components import build
from ..interfaces import ImageDataset

ALLOWED_KEYS = {"image", "label", "canonical", "pose", "pose_component"}


class DatasetContract:
    """Tests every dataset plugin must pass; set ``dataset_config`` in the subclass
    (keep it small, e.g. with ``limit``: each split is built twice)."""

    #: the data config section (a dict with ``type``).
    dataset_config: dict = None
    #: the splits to test: ``("train", "test", "all")`` for a factory that also takes ``split="all"``.
    splits: tuple[str, ...] = ("train", "test")
    #: how many items (spread over the dataset) each test reads.
    n_checked: int = 8

    _built: dict = None

    def build_dataset(self, split: str, fresh: bool = False) -> ImageDataset:
        """The dataset for ``split``; built once per test class unless ``fresh``."""
        assert self.dataset_config is not None, "set dataset_config = {'type': ...} in the test class"
        if fresh:
            return build("data", self.dataset_config, split=split)
        cache = type(self).__dict__.get("_built")
        if cache is None:
            cache = {}
            type(self)._built = cache
        if split not in cache:
            cache[split] = build("data", self.dataset_config, split=split)
        return cache[split]

    def _indices(self, ds) -> list[int]:
        n = len(ds)
        return sorted({min(n - 1, (i * n) // self.n_checked) for i in range(self.n_checked)} | {n - 1})

    def test_declared_attributes(self):
        for split in self.splits:
            ds = self.build_dataset(split)
            assert isinstance(ds, ImageDataset)
            assert ds.split == split
            assert len(ds) > 0
            assert len(ds.image_shape) in (3, 4), f"image_shape {ds.image_shape} is neither (C, H, W) nor (C, D, H, W)"
            assert min(ds.image_shape) >= 1
            assert ds.n_classes is None or (isinstance(ds.n_classes, int) and ds.n_classes >= 1)
            sizes = ds.split_sizes()
            assert set(self.splits) <= set(sizes), f"split_sizes() {sizes} lacks a split"
            assert sizes[split] == len(ds), f"split_sizes()[{split!r}] = {sizes[split]} but len = {len(ds)}"
            if {"train", "test", "all"} <= set(sizes):
                assert sizes["all"] == sizes["train"] + sizes["test"], f"split_sizes() {sizes}: all is not the sum"
            for attribute in ("item_names", "source_indices", "item_splits"):
                values = getattr(ds, attribute, None)
                assert values is None or len(values) == len(ds), f"{attribute} has {len(values)} entries, len is {len(ds)}"
            names = getattr(ds, "class_names", None)
            assert names is None or len(names) == ds.n_classes

    def test_items(self):
        for split in self.splits:
            ds = self.build_dataset(split)
            keys = None
            for i in self._indices(ds):
                item = ds[i]
                assert isinstance(item, dict) and "image" in item, f"item {i} is not a dict with 'image'"
                assert set(item) <= ALLOWED_KEYS, f"unexpected keys {set(item) - ALLOWED_KEYS}"
                keys = keys or set(item)
                assert set(item) == keys, f"item {i} has keys {set(item)}, item 0 has {keys}"
                for name in ("image", "canonical"):
                    if name in item:
                        img = item[name]
                        assert img.dtype == torch.float32, f"{name} dtype {img.dtype}"
                        assert tuple(img.shape) == tuple(ds.image_shape), f"{name} shape {tuple(img.shape)}"
                        assert img.min() >= 0.0 and img.max() <= 1.0, f"{name} of item {i} leaves [0, 1]"
                if "label" in item:
                    label = item["label"]
                    assert label.dtype == torch.int64 and label.dim() == 0
                    assert ds.n_classes is not None and 0 <= int(label) < ds.n_classes
                else:
                    assert ds.n_classes is None, "n_classes is set but items carry no label"
                if "pose" in item:
                    assert item["pose"].dtype == torch.float32 and item["pose"].dim() == 1
                    assert "canonical" in item, "a dataset that knows the pose must give the canonical image"
                if "pose_component" in item:
                    assert item["pose_component"].dtype == torch.int64 and item["pose_component"].dim() == 0
                    assert "pose" in item, "pose_component is the discrete part of a pose: give the pose too"

    def test_default_collate_batches(self):
        ds = self.build_dataset(self.splits[0])
        batch = next(iter(DataLoader(ds, batch_size=min(4, len(ds)))))
        assert batch["image"].shape == (min(4, len(ds)), *ds.image_shape)

    def test_deterministic(self):
        for split in self.splits:
            first, second = self.build_dataset(split), self.build_dataset(split, fresh=True)
            assert len(first) == len(second)
            for i in self._indices(first):
                a, b = first[i], second[i]
                assert a.keys() == b.keys()
                for key in a:
                    torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"item {i} {key!r} differs")

    def test_as_tensors_agrees_with_items(self):
        for split in self.splits:
            ds = self.build_dataset(split)
            stacked = ds.as_tensors()
            if stacked is None:
                continue
            item0 = ds[0]
            assert set(stacked) == set(item0)
            for key, value in stacked.items():
                assert value.shape[0] == len(ds), f"as_tensors()[{key!r}] has {value.shape[0]} rows, len is {len(ds)}"
            for i in self._indices(ds):
                item = ds[i]
                for key, value in stacked.items():
                    torch.testing.assert_close(value[i], item[key], rtol=0, atol=0)

"""``image_folder``: a user's own folder of PNG/JPEG/... images.

Either every image lies directly in the folder (no labels), or every image lies in a
sub-folder named after its class (labels ``0..K-1`` in sorted sub-folder order). Images
are converted to grayscale or RGB and, with ``resize``, resized to a square. Files that
are not images by their extension (a ``notes.txt``, a ``README``) are skipped with a
warning; hidden files (``.DS_Store``) silently. Each item's name is its path relative to
the folder (``cats/001.png``), in that sorted order.

Every file's header is checked when the dataset is built; pixels are decoded when they are
needed: all of a split's at once when it is held in memory, a batch at a time when it is
streamed (``storage: stream``), so a folder may hold more images than fit in memory.
16-bit grayscale images (TIFF, PNG) keep their depth: divided by 65535, not cut to 8 bits;
32-bit float TIFFs must hold values in ``[0, 1]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field, PositiveInt, field_validator

from mcvae_framework.errors import DataError
from mcvae_framework.interfaces import (ALL, SeededSplitConfig, SourceReader, build_split, check_split, resolve_path,
                                        seeded_split)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "P;L"}
#: grayscale modes deeper than 8 bits: read at full depth, not cut to 0..255.
DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageFolderConfig(SeededSplitConfig):
    """Images from a folder (optionally one sub-folder per class), split by a seed."""

    type: Literal["image_folder"] = "image_folder"
    path: str = Field(..., description="the folder; a relative path is read from the config file's folder")
    resize: Optional[PositiveInt] = Field(
        None, description="resize every image to resize x resize pixels (needed when sizes differ or are not square)"
    )
    grayscale: Optional[bool] = Field(
        None, description="true: 1 channel; false: 3 channels (RGB); null: 1 channel if every image is grayscale"
    )

    #: ``mcvae predict RUN --data FOLDER`` reads folders with this plugin.
    reads_paths: ClassVar[str] = "folder"

    _resolve_path = field_validator("path")(resolve_path)

    def missing_resources(self) -> list[tuple[str, str]]:
        folder = Path(self.path)
        if not folder.is_dir():
            what = "a file, not a folder" if folder.exists() else "no folder"
            return [("path", f"{what} at {folder} (resolved: {folder.resolve()}); set `path:` to a folder of "
                             "images, or one with a sub-folder per class (a relative path is read from the "
                             "config file's folder)")]
        return []


def _listing(paths, limit: int = 3) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def list_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Image files of ``folder`` in sorted order, their labels and the class names.

    Files without an image extension are skipped (with one warning listing them).

    :raises DataError: no such folder, no images, or a mix of loose images and class
        sub-folders.
    """
    if not folder.is_dir():
        raise DataError(f"image_folder: no folder at {folder} (resolved: {folder.resolve()}); set `path:` to a "
                        "folder of images, or one with a sub-folder per class")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    skipped = [p for p in entries if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES]
    class_dirs = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if class_dirs and loose:
        raise DataError(
            f"image_folder {folder}: has both class sub-folders ({_listing([d.name for d in class_dirs])}) and "
            f"loose files ({_listing([p.name for p in loose])}); put every image in a class sub-folder, or "
            "use no sub-folders at all"
        )
    if class_dirs:
        files, labels = [], []
        for label, sub in enumerate(class_dirs):
            members = sorted(p for p in sub.iterdir() if not p.name.startswith("."))
            skipped += [p for p in members if not (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)]
            members = [p for p in members if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            files += members
            labels += [label] * len(members)
        names = [d.name for d in class_dirs]
    else:
        files, labels, names = loose, None, None
    if not files:
        also = f" (skipped {len(skipped)} other entries: {_listing([p.name for p in skipped])})" if skipped else ""
        raise DataError(f"image_folder {folder}: no images found{also}; add image files ending in "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))} (or class sub-folders of them)")
    if skipped:
        warnings.warn(
            f"image_folder {folder}: skipped {len(skipped)} entries that are not image files "
            f"({_listing([str(p.relative_to(folder)) for p in skipped])})", UserWarning, stacklevel=2,
        )
    return files, labels, names


def inspect_images(files: list[Path], resize: int | None, grayscale: bool | None, folder: Path
                   ) -> tuple[str, int]:
    """Check every file's header (mode and size; cheap, nothing is decoded) and return
    the PIL mode all images are converted to, the same for both splits, and their side.

    :raises DataError: an unreadable file, or differing / non-square sizes without ``resize``.
    """
    from PIL import Image, UnidentifiedImageError

    sizes, gray = {}, True
    for path in files:
        try:
            with Image.open(path) as img:
                sizes.setdefault(img.size, path)
                gray = gray and img.mode in GRAY_MODES
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"image_folder {folder}: cannot read {path} as an image ({exc}); remove or replace it"
            ) from None
    if resize is None:
        if len(sizes) > 1:
            examples = "; ".join(f"{w}x{h} ({p})" for (w, h), p in list(sizes.items())[:3])
            raise DataError(f"image_folder {folder}: images have different sizes ({examples}); set `resize: N` to "
                            "resize them all to N x N")
        (w, h), path = next(iter(sizes.items()))
        if w != h:
            raise DataError(f"image_folder {folder}: images are {w}x{h}, not square ({path}); set `resize: N`")
    if grayscale is None:
        grayscale = gray
    side = resize if resize is not None else next(iter(sizes))[0]
    return ("L" if grayscale else "RGB"), side


def decode_image(path: Path, resize: int | None, mode: str, folder: Path) -> torch.Tensor:
    """``(C, S, S)`` float32 pixels in ``[0, 1]`` of one file, converted to ``mode`` and resized."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if mode == "L" and img.mode in DEEP_MODES:
                img = _deep_to_float(img, path, folder)
            else:
                img = img.convert(mode)
    except OSError as exc:  # a header that parses but pixel data that does not
        raise DataError(f"image_folder {folder}: cannot decode {path} ({exc}); remove or replace it") from None
    if resize is not None and img.size != (resize, resize):
        img = img.resize((resize, resize), Image.Resampling.BILINEAR)
    if img.mode == "F":
        pixels = torch.from_numpy(np.array(img, dtype=np.float32)).clamp_(0.0, 1.0)  # resizing may overshoot
    else:
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).to(torch.float32) / 255.0
    return pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1).contiguous()


def _deep_to_float(img, path: Path, folder: Path):
    """A 16-bit or 32-bit grayscale image as a float image in ``[0, 1]``."""
    from PIL import Image

    values = np.asarray(img, dtype=np.float32)
    if img.mode == "F":
        lo, hi = float(values.min()), float(values.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(f"image_folder {folder}: {path} is a float image with values {lo:.4g}..{hi:.4g}; "
                            "float images must lie in [0, 1] -- rescale them, or save them as 8- or 16-bit images")
    else:
        if values.min() < 0 or values.max() > 65535:
            raise DataError(f"image_folder {folder}: {path} holds values {values.min():.0f}..{values.max():.0f}; "
                            "integer images must lie in 0..65535 (16 bits) -- rescale them")
        values = values / 65535.0
    return Image.fromarray(values, mode="F")


class FolderReader(SourceReader):
    """Decodes the files at the asked positions; it keeps no file open between reads."""

    def __init__(self, files: list[Path], resize: int | None, mode: str, side: int, folder: Path):
        super().__init__((1 if mode == "L" else 3, side, side), prepare=None, source=list(files))
        self.resize, self.mode, self.folder = resize, mode, folder

    def read(self, positions) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) == 0:
            return torch.empty(0, *self.image_shape)
        return torch.stack([decode_image(self._source[i], self.resize, self.mode, self.folder) for i in positions])


def make_image_folder(config: ImageFolderConfig, *, split: str = "train"):
    check_split(split, "image_folder")
    folder = Path(config.path).expanduser()
    files, labels, names = list_images(folder)
    mode, side = inspect_images(files, config.resize, config.grayscale, folder)
    label_array = np.asarray(labels, dtype=np.int64) if labels is not None else None
    parts = seeded_split(len(files), label_array, config.test_fraction, config.split_seed, f"image_folder {folder}",
                         allow_empty=split == ALL)
    # Decode only the images a split keeps after `limit`: now (in memory) or when read (streamed).
    return build_split(
        config, split, parts, FolderReader(files, config.resize, mode, side, folder),
        label_array, names=[p.relative_to(folder).as_posix() for p in files],
        n_classes=len(names) if names else None, sizes={k: len(v) for k, v in parts.items()}, class_names=names,
        description=f"image_folder ({folder})",
    )

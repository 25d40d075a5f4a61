"""``image_folder``: a user's own folder of PNG/JPEG/... images.

Either every image lies directly in the folder (no labels), or every image lies in a
sub-folder named after its class (labels ``0..K-1`` in sorted sub-folder order). Images
are converted to grayscale or RGB and, with ``resize``, resized to a square. Files that
are not images by their extension (a ``notes.txt``, a ``README``) are skipped with a
warning; hidden files (``.DS_Store``) silently. Each item's name is its path relative to
the folder (``cats/001.png``), in that sorted order.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from mcvae_framework.errors import DataError

from .base import ALL, SeededSplitConfig, build_split, check_split, resolve_path, seeded_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


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


def inspect_images(files: list[Path], resize: int | None, grayscale: bool | None, folder: Path) -> str:
    """Check every file's header (mode and size; cheap, nothing is decoded) and return
    the PIL mode all images are converted to, the same for both splits.

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
    return "L" if grayscale else "RGB"


def read_images(files: list[Path], resize: int | None, mode: str, folder: Path) -> np.ndarray:
    """``(N, C, S, S)`` uint8 pixels of ``files``, converted to ``mode`` and resized."""
    from PIL import Image

    pixels = []
    for path in files:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
        except OSError as exc:  # a header that parses but pixel data that does not
            raise DataError(f"image_folder {folder}: cannot decode {path} ({exc}); remove or replace it") from None
        if resize is not None and img.size != (resize, resize):
            img = img.resize((resize, resize), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        pixels.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(pixels)


def make_image_folder(config: ImageFolderConfig, *, split: str = "train"):
    check_split(split, "image_folder")
    folder = Path(config.path).expanduser()
    files, labels, names = list_images(folder)
    mode = inspect_images(files, config.resize, config.grayscale, folder)
    label_array = np.asarray(labels, dtype=np.int64) if labels is not None else None
    parts = seeded_split(len(files), label_array, config.test_fraction, config.split_seed, f"image_folder {folder}",
                         allow_empty=split == ALL)
    # Decode only the images a split keeps after `limit`.
    return build_split(
        config, split, parts, lambda idx: read_images([files[i] for i in idx], config.resize, mode, folder),
        label_array, names=[p.relative_to(folder).as_posix() for p in files], scale=255.0,
        n_classes=len(names) if names else None, sizes={k: len(v) for k, v in parts.items()}, class_names=names,
        description=f"image_folder ({folder})",
    )

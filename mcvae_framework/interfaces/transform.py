"""The ``transform`` block of a data config: move every image by a seeded pose of a group.

```yaml
transform: {group: se2, angle_deg: [-90, 90], shift: 0.25, seed: 0, canvas: 40}
```

``group`` is a group tag (see ``mcvae plugins``); ``seed`` and ``canvas`` belong to the
transform; every other key goes to that group's config (``angle_deg``, ``shift``,
``log_scale``, ... set the pose distribution its ``sample`` draws from).

How the moved images are made:

* Each image is first zero-padded (centred) to ``canvas x canvas`` pixels (a volume to
  ``canvas`` voxels along each axis; default: the image side, i.e. no padding). The padded, un-moved image is the item's ``canonical``.
  Pad whenever the poses would push content out of the frame: ``28 -> 40`` keeps MNIST
  digits whole under SE(2) shifts of 7 px and rotations; rotating a
  28x28 digit without padding cuts its corners. The group acts in the canvas's
  normalised coordinates, so its ``shift`` is a fraction of the *canvas* side:
  ``shift: 0.25`` moves up to 10 px on a 40 canvas; MCE-VAE's "up to 7 px on 28x28" is
  ``shift: 0.175`` with ``canvas: 40``.
* Poses are drawn once, in blocks of :data:`CHUNK` indices; block ``b`` of split ``s``
  uses a ``torch.Generator`` seeded from ``(seed, s, b)``. Index ``i`` therefore gets the
  same pose in every process and run, whatever the dataset's length or ``limit``, and the
  train and test splits get independent poses.
* A group with a discrete part (``o2``: a mirror image or not) draws each image's component
  after the block's ``tau``, from the same generator (:meth:`LieGroup.sample_component`); the
  items then carry ``pose_component`` (an int64) beside ``pose``. A connected group draws
  nothing more, so its poses are the same as ever.
* The images are moved with the group's own ``element`` and ``act``: a block at a time when
  the dataset is built and held in memory (reading an item then costs nothing), or a
  batch at a time as items are read by a streaming dataset (``storage: stream``). Both
  use the same poses (:func:`draw_poses`), so both give the same items.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from ..config.components import build
from ..config.experiment import component_config
from ..errors import ConfigError

#: poses are drawn (and images moved) this many indices at a time.
CHUNK = 1024


def _group_problems_text(exc: ConfigError) -> str:
    """A group ConfigError's problems, with paths relative to the transform block."""
    parts = []
    for path, msg in exc.problems:
        if path in ("group", "group.type"):
            path = "group"
        elif path.startswith("group."):
            path = path[len("group."):]
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


class TransformConfig(BaseModel):
    """A seeded group pose per image; keys other than ``group``, ``seed`` and ``canvas``
    are the group's own config fields."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    group: str = Field(..., description="tag of the group whose poses move the images (see `mcvae plugins`)")
    seed: int = Field(0, description="seed of the poses: the same index always gets the same pose")
    canvas: Optional[PositiveInt] = Field(
        None, description="pad images (centred, zeros) to this side before moving them; default: the image side. "
        "E.g. 40 for 28x28 images under SE(2) shifts"
    )

    @model_validator(mode="after")
    def _check_group_config(self):
        # Validate the group part now, so `mcvae config validate` catches a bad group.
        if "type" in (self.model_extra or {}):
            raise ValueError("name the group with `group:`, not `type:`")
        try:
            component_config("group", self.group_config())
        except ConfigError as exc:
            raise ValueError(_group_problems_text(exc)) from None
        return self

    def group_config(self) -> dict:
        """The group's config dict: ``{"type": group, **the other keys}``."""
        return {"type": self.group, **(self.model_extra or {})}


def pose_generator(seed: int, split: str, block: int) -> torch.Generator:
    """The generator of one block of poses, a pure function of ``(seed, split, block)``."""
    digest = hashlib.sha256(f"mcvae-transform:{seed}:{split}:{block}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def pad_to_canvas(images: torch.Tensor, canvas: int) -> torch.Tensor:
    """Zero-pad ``(N, C, H, H)`` images (``(N, C, D, D, D)`` volumes), centred, to ``canvas``
    along every spatial axis."""
    side = images.shape[-1]
    before = (canvas - side) // 2
    after = canvas - side - before
    if before == after == 0:
        return images.contiguous()
    return F.pad(images, (before, after) * (images.dim() - 2))


def build_transform_group(config: TransformConfig):
    """The group named by the transform block, built through the plugin registry."""
    try:
        return build("group", config.group_config())
    except ConfigError as exc:
        raise ConfigError([("data.transform", _group_problems_text(exc))], source="data config") from None


def canvas_side(config: TransformConfig, side: int) -> int:
    """The canvas side for images of ``side`` pixels.

    :raises ConfigError: the canvas is smaller than the images.
    """
    canvas = config.canvas or side
    if canvas < side:
        raise ConfigError(
            [("data.transform.canvas", f"canvas {canvas} is smaller than the images ({side}x{side}); "
              f"use at least {side} (padding only grows images)")],
            source="data config",
        )
    return canvas


def draw_poses(config: TransformConfig, split: str, n: int, group) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(pose, component)`` of indices ``0..n-1`` of a split (see the module doc): ``(n, dim)``
    float32 ``tau`` and, for a group with a discrete part, ``(n,)`` int64 components (else
    ``None``)."""
    pose = torch.empty(n, int(group.dim), dtype=torch.float32)
    discrete = int(getattr(group, "n_components", 1)) > 1
    component = torch.empty(n, dtype=torch.int64) if discrete else None
    with torch.no_grad():
        for block, start in enumerate(range(0, n, CHUNK)):
            stop = min(start + CHUNK, n)
            # Always draw a whole block so that index i's pose does not depend on n.
            generator = pose_generator(config.seed, split, block)
            tau = group.sample(CHUNK, generator=generator)
            pose[start:stop] = tau[: stop - start].to(torch.float32)
            if discrete:
                component[start:stop] = group.sample_component(CHUNK, generator)[: stop - start]
    return pose, component


def check_data_kind(group, images: torch.Tensor, tag: str) -> None:
    """Refuse images a transform's group cannot move (2-D images for a volume group, or the
    reverse), naming both kinds.

    :raises ConfigError: naming ``data.transform.group``.
    """
    kind = getattr(group, "data_kind", "image")
    actual = "volume" if images.dim() == 5 else "image"
    if kind != actual:
        raise ConfigError([("data.transform.group", f"the group {tag!r} moves {kind}s, but the data holds "
                            f"{actual}s of shape {tuple(images.shape[1:])}; pick a group for {actual}s")],
                          source="data config")


def move_images(canonical: torch.Tensor, pose: torch.Tensor, group, component: torch.Tensor | None = None
                ) -> torch.Tensor:
    """``canonical`` images moved by ``element(pose, component)``, clamped to ``[0, 1]``."""
    with torch.no_grad():
        return group.act(canonical, group.element(pose, component)).clamp_(0.0, 1.0)


def transform_images(images: torch.Tensor, config: TransformConfig, split: str):
    """Pad and move ``(N, C, H, H)`` images (or ``(N, C, D, D, D)`` volumes) by seeded poses.

    :returns: ``(moved, canonical, pose, component)``: the moved images and the padded
        un-moved ones, both float32 at the canvas size, ``pose`` ``(N, dim)``, the
        Lie-algebra coordinates ``tau``, and ``component`` ``(N,)`` (``None`` for a
        connected group), with ``moved[i] = act(canonical[i], element(tau[i], component[i]))``.
    :raises ConfigError: the canvas is smaller than the images, or the group cannot move them.
    """
    canvas = canvas_side(config, images.shape[-1])
    group = build_transform_group(config)
    check_data_kind(group, images, config.group)
    canonical = pad_to_canvas(images.to(torch.float32), canvas)
    pose, component = draw_poses(config, split, canonical.shape[0], group)
    moved = torch.empty_like(canonical)
    for start in range(0, canonical.shape[0], CHUNK):
        stop = start + CHUNK
        part = component[start:stop] if component is not None else None
        moved[start:stop] = move_images(canonical[start:stop], pose[start:stop], group, part)
    return moved, canonical, pose, component

"""``mcvae data show``: what a config's data section yields, in numbers and in a picture."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
import torch

from ..config.components import build
from ..config.experiment import check_resources, load_config
from ..report.plotting import as_pictures
from ..runtime.data import dataset_tensors
from . import cli
from .config_cmd import set_option


@cli.group("data")
def data_group():
    """Inspect the data an experiment config describes."""


def pairs_grid(ds, n: int):
    """Images for a grid, ``n`` spread evenly over the dataset (so every class shows):
    rows of canonical images, each followed by the row of the same images as moved; a
    dataset without canonical images gives its images alone (volumes as their projections
    along the depth)."""
    count = min(n, len(ds))
    index = torch.linspace(0, len(ds) - 1, count).round().long()
    picked = {key: as_pictures(value) for key, value in
              dataset_tensors(ds, keys=("image", "canonical"), indices=index).items()}
    per_row = 8
    if "canonical" not in picked:
        return picked["image"], per_row
    rows = []
    for start in range(0, count, per_row):
        for part in (picked["canonical"][start:start + per_row], picked["image"][start:start + per_row]):
            pad = per_row - part.shape[0]
            rows.append(torch.cat([part, part.new_zeros(pad, *part.shape[1:])]) if pad else part)
    return torch.cat(rows), per_row


@data_group.command("show")
@click.argument("config_file", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="which split to build and draw")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="PNG file for the grid (default: data_<type>_<split>.png in the run folder, training.out_dir)")
@click.option("-n", "--count", type=click.IntRange(1, 256), default=32, show_default=True,
              help="how many images the grid shows")
def show_command(config_file, overrides, split, out, count):
    """Print the sizes, classes and image shape of CONFIG's data section, and write a PNG
    grid: where the items carry canonical images, each row of them sits above the same
    images as moved; otherwise the images alone. The data plugin may add lines of its own
    (e.g. how its images are moved)."""
    config = check_resources(load_config(config_file, overrides), source=config_file)
    ds = build("data", config.data, split=split)
    click.echo(f"data:        {getattr(ds, 'description', '') or config.data.type}  [{split} split]")
    sizes = ds.split_sizes()
    click.echo("sizes:       " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))
    click.echo(f"image shape: {' x '.join(map(str, ds.image_shape))} "
               f"({'C x D x H x W' if len(ds.image_shape) == 4 else 'C x H x W'})")
    names = getattr(ds, "class_names", None)
    if ds.n_classes is None:
        click.echo("classes:     none (unlabelled)")
    else:
        click.echo(f"classes:     {ds.n_classes}" + (f" ({', '.join(names)})" if names else ""))
        labels = dataset_tensors(ds, keys=("label",))["label"].tolist()
        counts = Counter(labels)
        click.echo(f"{split} per class: " + ", ".join(f"{k}: {counts[k]}" for k in range(ds.n_classes)))
    for label, text in config.data.data_summary(ds).items():  # the plugin's own lines
        click.echo(f"{label + ':':12s} {text}")
    click.echo("item keys:   " + ", ".join(ds[0].keys()))
    grid, per_row = pairs_grid(ds, count)
    path = Path(out) if out else Path(config.training.out_dir) / f"data_{config.data.type}_{split}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    from torchvision.utils import save_image  # not at the top: start-up time of every command

    save_image(grid, str(path), nrow=per_row, padding=2, pad_value=0.5)
    layout = "rows of canonical images, each above the same images moved" if "canonical" in ds[0] else "images"
    click.echo(f"wrote {path} ({layout})")

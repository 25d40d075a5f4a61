"""Using a trained model: load a run, run the model over images or a dataset.

Evaluation (``mcvae evaluate``), prediction (``mcvae predict``), the figures (``mcvae plot``)
and the trainer's TensorBoard images all go through here; :meth:`MCEVAE.predict
<mcvae_framework.model.mcevae.MCEVAE.predict>` is the one place that turns images into clusters,
cluster probabilities, poses and canonical images, and :func:`predict_images` only batches it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..runtime.checkpoint import load_checkpoint
from ..config.experiment import validate_config
from ..runtime.data import dataset_tensors
from ..runtime.run_layout import RunLayout
from ..model.mcevae import build_model


def run_checkpoint(run_dir, name: str = "last") -> Path:
    """``RUN/checkpoints/<name>.pt``, or a :class:`~mcvae_framework.errors.RunFolderError`
    (exit code 2) saying what the folder holds instead."""
    return RunLayout(run_dir).existing_checkpoint(name)


def load_trained_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The config and the trained model of a run, in eval mode.

    :param run_dir: a run folder (its ``checkpoints/last.pt`` is read) or a checkpoint file.
    :param device: where to put the model.
    :returns: ``(config, model)``.
    :raises CheckpointError: no readable checkpoint there (exit code 2).
    """
    path = Path(run_dir)
    checkpoint_path = path if path.is_file() else RunLayout(path).last
    return model_from_checkpoint(load_checkpoint(checkpoint_path), checkpoint_path, device=device)


def model_from_checkpoint(checkpoint: dict, source, device: str | torch.device = "cpu"):
    """``(config, model)`` of a loaded ``checkpoint`` (read from the file ``source``, which the
    config's messages name), the model in eval mode: for a caller that reads more of the
    checkpoint (its graph) and so loads it once."""
    config = validate_config(checkpoint["config"], source=str(source))
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the caller's RNG alone
        model = build_model(config, image_shape=tuple(checkpoint["image_shape"]))
    model.load_state_dict(checkpoint["model"])
    return config, model.to(device).eval()


def load_run(run_dir, checkpoint: str = "last", device: str | torch.device = "cpu"):
    """``(config, model)`` of ``RUN/checkpoints/<checkpoint>.pt``, the model in eval mode; a
    folder that holds no such checkpoint is one :class:`RunFolderError` (exit code 2)."""
    return load_trained_model(run_checkpoint(run_dir, checkpoint), device=device)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict_images(model, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """:meth:`MCEVAE.predict <mcvae_framework.model.mcevae.MCEVAE.predict>` over ``images`` in
    batches, in eval mode, every output on the CPU: ``cluster``, ``probabilities``,
    ``z_cluster``, ``z_style`` (with a style latent), ``tau`` (with a group), ``canonical``
    and ``reconstruction``."""
    model.eval()
    device = _device_of(model)
    parts: dict[str, list] = {}
    for start in range(0, len(images), batch_size):
        for key, value in model.predict(images[start:start + batch_size].to(device)).items():
            parts.setdefault(key, []).append(value.detach().cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def cluster_probabilities(model, images: torch.Tensor, device=None, batch_size: int = 512) -> torch.Tensor:
    """``(N, K)``: :meth:`MCEVAE.cluster_probabilities <mcvae_framework.model.mcevae.MCEVAE.cluster_probabilities>`
    of ``images`` in batches, in eval mode (the model's mode is put back afterwards), on the CPU.

    :param device: where the batches go (default: the model's device).
    """
    device = _device_of(model) if device is None else device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model.cluster_probabilities(images[i:i + batch_size].to(device)).cpu()
                              for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def predict_dataset(model, dataset, batch_size: int = 256) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every item of ``dataset`` stacked (:func:`~mcvae_framework.runtime.data.dataset_tensors`) and
    the model's predictions for them (:func:`predict_images`): ``(tensors, outputs)``."""
    tensors = dataset_tensors(dataset)
    return tensors, predict_images(model, tensors["image"], batch_size)


__all__ = ["cluster_probabilities", "load_run", "load_trained_model", "model_from_checkpoint", "predict_dataset",
           "predict_images", "run_checkpoint"]

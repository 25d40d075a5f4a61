"""The run folder a training writes (``training.out_dir``)::

    RUN/config.json            the resolved config
    RUN/metrics.csv            one row per epoch (see :mod:`mcvae_framework.train.run_logging`)
    RUN/train.log              the log (also shown on the console)
    RUN/checkpoints/last.pt    written atomically after every epoch (and once before the first)
    RUN/checkpoints/best.pt    the ELBO epoch with the lowest ``training.best_metric`` so far
    RUN/checkpoints/epoch_NNNN.pt  every ``training.checkpoint_every`` epochs, if asked
    RUN/tensorboard/           event files, with ``training.tensorboard: true``

:class:`RunFolder` prepares it (a fresh run, an overwritten one, a resumed one), writes the
checkpoints and reads back the one a resumed run goes on from.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from ..runtime.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from ..errors import TrainingError
from .run_logging import RESUME_MUST_MATCH, config_differences

log = logging.getLogger("mcvae_framework.train.trainer")


class RunFolder:
    """One run's folder.

    :param run_dir: the folder (``training.out_dir``).
    :param context: the run's :class:`~mcvae_framework.runtime.distributed.DistributedContext`
        (only rank 0 writes).
    :param training: the config's ``training`` section (``best_metric``, ``checkpoint_every``).
    """

    def __init__(self, run_dir: Path, context, training):
        self.run_dir = Path(run_dir)
        self.context = context
        self.training = training
        self._best_warned = False

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def prepare(self, config_dict: dict, *, resume: bool, overwrite: bool, open_log) -> None:
        """Check the folder against ``resume``/``overwrite``, clear a run being overwritten,
        open the log (``open_log()``, rank 0) and write ``config.json``.

        :raises TrainingError: nothing to resume, or a run already there (without ``overwrite``).
        """
        exists = self.checkpoint_path.exists()
        if resume and not exists:
            raise TrainingError(
                f"--resume: {self.run_dir} holds no checkpoint ({self.checkpoint_path} is missing); "
                "start a fresh run without --resume"
            )
        if not resume and exists and not overwrite:
            raise TrainingError(
                f"{self.run_dir} already holds a run ({self.checkpoint_path}). Continue it with "
                "--resume, start it afresh with --overwrite, or choose another folder with --out-dir."
            )
        self.context.barrier()  # every process has looked before rank 0 changes anything
        if self.context.is_main:
            if not resume:
                for stale in (self.run_dir / "checkpoints", self.run_dir / "metrics.csv", self.run_dir / "train.log"):
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    elif stale.exists():
                        stale.unlink()
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            open_log()
            atomic_write_text(self.run_dir / "config.json", json.dumps(config_dict, indent=2) + "\n")
        self.context.barrier()

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``checkpoints/last.pt`` (atomically), ``checkpoints/best.pt`` when the epoch is the
        best by ``training.best_metric``, and ``epoch_NNNN.pt`` every ``checkpoint_every``."""
        save_checkpoint(checkpoint, self.checkpoint_path)
        if self.improves_best(checkpoint["metrics"]):
            save_checkpoint(checkpoint, self.checkpoint_path.with_name("best.pt"))
        every, done = self.training.checkpoint_every, checkpoint["epoch"]
        if every and done and done % every == 0:
            save_checkpoint(checkpoint, self.checkpoint_path.with_name(f"epoch_{done:04d}.pt"))

    def improves_best(self, history: list[dict[str, Any]]) -> bool:
        """Whether the epoch just finished is the best ELBO epoch so far by
        ``training.best_metric`` (lower is better). The best so far comes from the history,
        so a resumed run goes on comparing with the epochs before the interruption."""
        metric = self.training.best_metric
        if not history or history[-1].get("phase") == "pretrain":
            return False

        def value(row):
            v = row.get(metric)
            return v if isinstance(v, (int, float)) and math.isfinite(v) and row.get("phase") != "pretrain" else None

        current = value(history[-1])
        if current is None:
            prefix = metric.split("_", 1)[0] + "_"
            known = [k for k in history[-1] if k.startswith(prefix)]
            if known and metric not in history[-1] and not self._best_warned:
                self._best_warned = True
                log.warning("training.best_metric %r is not a column of metrics.csv (%s): checkpoints/best.pt "
                            "is not written", metric, ", ".join(known))
            return False
        earlier = [v for v in map(value, history[:-1]) if v is not None]
        return not earlier or current < min(earlier)

    def read_resume_checkpoint(self, config_dict: dict, image_shape: tuple) -> dict[str, Any]:
        """The last checkpoint, once its config and image shape are checked against the run's:
        fields that shape the parameters must match; other changes are logged.

        :raises TrainingError: unreadable, or of another model than ``config_dict`` describes.
        """
        checkpoint = load_checkpoint(self.checkpoint_path)
        differences = config_differences(checkpoint["config"], config_dict)
        fatal = [d for d in differences if d[0].startswith(RESUME_MUST_MATCH)]
        if tuple(checkpoint["image_shape"]) != image_shape:
            fatal.append(("image shape", tuple(checkpoint["image_shape"]), image_shape))
        if fatal:
            listing = "; ".join(f"{key}: checkpoint {old!r}, config {new!r}" for key, old, new in fatal)
            raise TrainingError(
                f"cannot resume {self.run_dir}: the config describes a different model than its checkpoint "
                f"{self.checkpoint_path} ({listing}). Resume with the run's own config "
                f"({self.run_dir / 'config.json'}), or start a fresh run in another --out-dir."
            )
        for key, old, new in differences:
            if key != "training.out_dir":
                log.warning("resuming with a changed setting: %s was %r, now %r", key, old, new)
        return checkpoint


__all__ = ["RunFolder"]

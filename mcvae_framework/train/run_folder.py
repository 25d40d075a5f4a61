"""The run folder a training writes (``training.out_dir``; its layout and rules are
:mod:`mcvae_framework.runtime.run_layout`).

:class:`RunFolder` prepares it (a fresh run, an overwritten one, a resumed one), writes the
checkpoints -- ``last.pt`` after every epoch, the one it replaces kept as ``previous.pt`` --
and reads back the one a resumed run goes on from: ``last.pt``, or ``previous.pt`` when
``last.pt`` is damaged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..runtime.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from ..runtime.run_layout import RunLayout, check_for_training, config_differences, refuse_resume_conflicts, \
    resume_conflicts

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
        self.layout = RunLayout(self.run_dir)
        self.context = context
        self.training = training
        self._best_warned = False
        # False while last.pt is a damaged file a resume stepped over: it must not become previous.pt
        self._last_is_good = True

    @property
    def checkpoint_path(self) -> Path:
        return self.layout.last

    def prepare(self, config_dict: dict, *, resume: bool, overwrite: bool, open_log) -> None:
        """Check the folder against ``resume``/``overwrite``
        (:func:`~mcvae_framework.runtime.run_layout.check_for_training`), clear a run being
        overwritten, open the log (``open_log()``, rank 0) and write ``config.json``.

        :raises RunFolderError: nothing to resume, or a run already there (without ``overwrite``).
        """
        check_for_training(self.layout, resume=resume, overwrite=overwrite)
        self.context.barrier()  # every process has looked before rank 0 changes anything
        if self.context.is_main:
            if not resume:
                for stale in self.layout.training_outputs():
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    elif stale.exists():
                        stale.unlink()
            self.layout.checkpoints.mkdir(parents=True, exist_ok=True)
            open_log()
            atomic_write_text(self.layout.config, json.dumps(config_dict, indent=2) + "\n")
        self.context.barrier()

    def write_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """``checkpoints/last.pt`` (atomically; the ``last.pt`` it replaces becomes
        ``previous.pt`` by an atomic rename), ``checkpoints/best.pt`` when the epoch is the
        best by ``training.best_metric``, and ``epoch_NNNN.pt`` every ``checkpoint_every``.
        At every moment ``last.pt`` or ``previous.pt`` is a whole checkpoint."""
        last = self.layout.last
        if last.exists() and self._last_is_good:
            os.replace(last, self.layout.previous)
        save_checkpoint(checkpoint, last)
        self._last_is_good = True
        if self.improves_best(checkpoint["metrics"]):
            save_checkpoint(checkpoint, self.layout.best)
        every, done = self.training.checkpoint_every, checkpoint["epoch"]
        if every and done and done % every == 0:
            save_checkpoint(checkpoint, self.layout.epoch_checkpoint(done))

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

    def read_resume_checkpoint(self, config_dict: dict, image_shape: tuple) -> tuple[dict[str, Any], Path]:
        """The checkpoint a resumed run goes on from, and its path: ``last.pt``, or
        ``previous.pt`` when ``last.pt`` is damaged (said in the log), once its config and image
        shape are checked against the run's: fields that shape the parameters must match;
        other changes are logged.

        :raises CheckpointError: neither checkpoint can be read.
        :raises RunFolderError: the checkpoint is of another model than ``config_dict`` describes.
        """
        checkpoint, path = self._readable_checkpoint()
        differences = config_differences(checkpoint["config"], config_dict)
        conflicts = resume_conflicts(checkpoint["config"], config_dict)
        if tuple(checkpoint["image_shape"]) != image_shape:
            conflicts.append(("image shape", tuple(checkpoint["image_shape"]), image_shape))
        refuse_resume_conflicts(self.layout, conflicts, "checkpoint", path)
        for key, old, new in differences:
            if key != "training.out_dir":
                log.warning("resuming with a changed setting: %s was %r, now %r", key, old, new)
        return checkpoint, path

    def _readable_checkpoint(self) -> tuple[dict[str, Any], Path]:
        """``last.pt``; ``previous.pt`` when ``last.pt`` cannot be read (said in the log)."""
        last, previous = self.layout.last, self.layout.previous
        try:
            return load_checkpoint(last), last
        except CheckpointError as error:
            damaged = error
        if not previous.is_file():
            raise damaged
        try:
            checkpoint = load_checkpoint(previous)
        except CheckpointError as error:
            raise CheckpointError(f"{damaged} The previous checkpoint {previous} cannot be used either: it "
                                  f"{error.reason}.", path=last, reason=damaged.reason) from None
        self._last_is_good = False
        log.warning("%s %s; resuming from the previous checkpoint %s (epoch %d): the epochs after it are "
                    "trained again", last, damaged.reason, previous, int(checkpoint["epoch"]))
        return checkpoint, previous


__all__ = ["RunFolder"]

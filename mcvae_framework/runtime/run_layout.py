"""The run folder: where its files are, and the rules for starting, resuming and
overwriting a run in it -- spelled once, for training, reporting and the CLI::

    RUN/config.json                the resolved config
    RUN/metrics.csv                one row per epoch
    RUN/train.log                  the log (also shown on the console)
    RUN/checkpoints/last.pt        written atomically after every epoch (and once before the first)
    RUN/checkpoints/previous.pt    the checkpoint last.pt replaced: what --resume goes on from
                                   when last.pt is damaged
    RUN/checkpoints/best.pt        the ELBO epoch with the lowest ``training.best_metric`` so far
    RUN/checkpoints/epoch_NNNN.pt  every ``training.checkpoint_every`` epochs, if asked
    RUN/tensorboard/               event files, with ``training.tensorboard: true``
    RUN/report.json, report.md     ``mcvae evaluate``
    RUN/plots/                     ``mcvae plot`` (by default)
    RUN/predictions/               ``mcvae predict`` (by default)

Every broken rule is one :class:`~mcvae_framework.errors.RunFolderError` (exit code 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunFolderError

#: Config fields that shape the parameters or the optimiser's state: a resumed run must keep them.
RESUME_MUST_MATCH = ("model", "group", "encoder", "decoder", "prior", "training.optimizer", "training.scheduler")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder.

    :param root: the folder (``training.out_dir``).
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>.pt`` (``last``, ``previous``, ``best``)."""
        return self.checkpoints / f"{name}.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def previous(self) -> Path:
        return self.checkpoint("previous")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    def epoch_checkpoint(self, epoch: int) -> Path:
        """``checkpoints/epoch_NNNN.pt`` (``training.checkpoint_every``)."""
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def holds_a_run(self) -> bool:
        """Whether a training has left a checkpoint here (last.pt, or the previous one)."""
        return self.last.exists() or self.previous.exists()

    def training_outputs(self) -> tuple[Path, ...]:
        """What a training writes, and ``--overwrite`` deletes first."""
        return self.checkpoints, self.metrics, self.log

    def existing_checkpoint(self, name: str = "last") -> Path:
        """``checkpoints/<name>.pt`` of a finished or running training (for ``evaluate``,
        ``predict``, ``plot``).

        :raises RunFolderError: not a run folder, or no such checkpoint (what it holds instead).
        """
        path = self.checkpoint(name)
        if path.is_file():
            return path
        if not self.checkpoints.is_dir():
            raise RunFolderError(f"{self.root} is not a run folder ({path} is missing); give the folder "
                                 "`mcvae train` wrote (its training.out_dir, e.g. runs/quickstart)")
        present = sorted(p.name for p in self.checkpoints.glob("*.pt")) or ["none"]
        hint = (" best.pt is written from the first ELBO epoch that reaches training.best_metric; use "
                "--checkpoint last") if name == "best" else ""
        raise RunFolderError(f"{self.root}: no checkpoints/{name}.pt (the folder holds: {', '.join(present)}).{hint}")


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for every leaf that differs between two configs."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    missing = object()
    keys = list(flat_old) + [k for k in flat_new if k not in flat_old]
    return [
        (key, flat_old.get(key, missing), flat_new.get(key, missing))
        for key in keys
        if flat_old.get(key, missing) != flat_new.get(key, missing)
    ]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out if out or not prefix else {prefix: data}
    return {prefix: data}


def resume_conflicts(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """The differences between a run's config ``old`` and ``new`` that a resume cannot
    cross (:data:`RESUME_MUST_MATCH`)."""
    return [d for d in config_differences(old, new) if d[0].startswith(RESUME_MUST_MATCH)]


def check_for_training(layout: RunLayout, *, resume: bool, overwrite: bool, config_dict: dict | None = None) -> None:
    """The rules for training into ``layout``'s folder, checked before anything is built:

    * ``resume`` and ``overwrite`` contradict each other;
    * ``resume`` needs a checkpoint (``last.pt``, or ``previous.pt`` when only it is left);
    * a folder that holds a run is neither resumed nor overwritten unless asked;
    * ``resume`` with a config (``config_dict``) of another model than the run's
      ``config.json`` is refused.

    :raises RunFolderError: a rule is broken; the message names the folder and the ways on.
    """
    root, last = layout.root, layout.last
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: --resume continues the run in "
                             f"{root}, --overwrite deletes it; give one of them")
    if resume and not layout.holds_a_run():
        raise RunFolderError(f"--resume: the run folder {root} (training.out_dir, or --out-dir) holds no "
                             f"checkpoint ({last} is missing); start a fresh run without --resume, or give the "
                             "run's folder with --out-dir")
    if not resume and layout.holds_a_run() and not overwrite:
        raise RunFolderError(f"the run folder {root} (training.out_dir) already holds a run ({last}). Continue "
                             "it with --resume, start it afresh with --overwrite (its checkpoints, metrics and "
                             "log are deleted), or choose another folder with --out-dir")
    if resume and config_dict is not None and layout.config.is_file():
        try:
            old = json.loads(layout.config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # an unreadable config.json: the checkpoint's own config is checked when it loads
        if isinstance(old, dict):
            refuse_resume_conflicts(layout, resume_conflicts(old, config_dict), "run", layout.config)


def refuse_resume_conflicts(layout: RunLayout, conflicts: list, what: str, where: Path) -> None:
    """One :class:`RunFolderError` listing ``conflicts`` (from :func:`resume_conflicts`)
    between the run's ``what`` (read from ``where``) and the config; nothing when empty."""
    if conflicts:
        listing = "; ".join(f"{key}: {what} {a!r}, config {b!r}" for key, a, b in conflicts)
        raise RunFolderError(f"--resume: the config describes another model than the run in {layout.root} "
                             f"({where}: {listing}). Resume with the run's own config ({layout.config}), or "
                             "train the new config into another folder with --out-dir")


__all__ = ["RESUME_MUST_MATCH", "RunLayout", "check_for_training", "config_differences", "refuse_resume_conflicts",
           "resume_conflicts"]

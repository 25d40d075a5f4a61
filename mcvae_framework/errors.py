"""Exceptions the CLI turns into one clear paragraph and a non-zero exit code."""

from __future__ import annotations


class McvaeError(Exception):
    """Base class: an error a user can fix; the CLI prints it without a traceback."""

    exit_code = 1


class ConfigError(McvaeError, ValueError):
    """A config file (or a config dict) is invalid.

    ``problems`` is one clear paragraph (a string: ``ConfigError("data.path: ... ; set
    ...")``) or ``(field_path, message)`` pairs; ``source`` names the file. A plugin's
    factory may raise it with no ``source``: the command that built the component adds
    the config file before it prints the message (exit code 2).
    """

    exit_code = 2

    def __init__(self, problems, source: str | None = None):
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = [(str(path), str(msg)) for path, msg in problems]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.source or "config"
        lines = [f"{where}: invalid configuration"]
        for path, msg in self.problems:
            lines.append(f"  {path}: {msg}" if path else f"  {msg}")
        return "\n".join(lines)


class PluginError(McvaeError):
    """Plugins disagree (two claim the same tag) or one registers something malformed."""

    exit_code = 3


class DataError(McvaeError):
    """Data cannot be found or read (names the path and how to get the data)."""

    exit_code = 2


class RunFolderError(McvaeError):
    """A run folder does not fit the command: it already holds a run (and neither
    ``--resume`` nor ``--overwrite`` was given), holds none to resume or evaluate, or holds
    a run of another model than the config describes."""

    exit_code = 2


class TrainingError(McvaeError):
    """Training had to stop (non-finite loss, a component that misbehaves, ...)."""

    exit_code = 1


class CheckpointError(RunFolderError, TrainingError):
    """A checkpoint file cannot be used: missing, truncated, corrupt, not an mcvae checkpoint,
    of another format version or incomplete. ``path`` is the file, ``reason`` the short
    why. (Also a :class:`TrainingError`, the type unusable checkpoints had before: code
    that catches that still catches them.)"""

    exit_code = 2

    def __init__(self, message: str, *, path=None, reason: str = ""):
        self.path = path
        self.reason = reason or message
        super().__init__(message)

"""Typed registries: (kind, tag) -> (pydantic config class, factory, plugin name)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from ..errors import PluginError
from ..hookspecs import KINDS


class ComponentConfig(BaseModel):
    """Base class of every component's config.

    Subclasses declare ``type: Literal["<tag>"]`` and their own fields; unknown keys are
    rejected so a typo in a config file never passes silently.

    A data config class that reads a user's own files sets the class variable
    ``reads_paths`` (``"folder"``, or file suffixes such as ``(".npy", ".npz")``) and has a
    ``path`` field: ``mcvae predict RUN --data PATH`` then reads such paths with it (see
    :meth:`own_files_section`). A field validator can resolve a relative path against the
    config file's folder, which validation passes as the context ``{"config_dir": ...}``.

    The methods below are what the core asks a *data* section (the core never reads a
    plugin's fields itself); their defaults suit any other component.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, protected_namespaces=())

    def missing_resources(self) -> list[tuple[str, str]]:
        """What this config names that is missing on this machine -- a data file or folder
        -- as ``(field, message)`` pairs; cheap (nothing is read). ``mcvae config validate``
        and ``mcvae train`` report them with exit code 2 before anything runs. Validation
        itself never looks at the disk, so that a run's config still loads where its
        training data is absent. Default: nothing is missing."""
        return []

    # ------------------------------------------------------------ data sections

    #: file kinds a data plugin reads from a user's ``path``: ``"folder"`` or suffixes.
    reads_paths: typing.ClassVar[str | tuple[str, ...]] = ()

    def own_files_section(self, path) -> dict:
        """The data section that reads a user's own folder or file ``path`` the way this
        section reads its data (e.g. the same resizing), as ``mcvae predict RUN --data PATH``
        needs; nothing may move or drop the user's images. Default: this plugin's ``type``
        with ``path`` alone (every other field at its default)."""
        return {"type": tag_of(type(self)), "path": str(path)}

    def without_canonical_images(self) -> str | None:
        """For a data section whose items will carry no ``canonical`` image: how to make
        them carry one, in a few words (``mcvae config validate`` says it when ``loss.mode``
        is ``supervised``). ``None`` (the default) when they carry one or the config cannot
        tell; the trainer then checks the first item."""
        return None

    def data_kind(self) -> str | None:
        """What this data section yields: ``"image"`` (``(C, H, W)`` items) or ``"volume"``
        (``(C, D, H, W)`` items), for ``mcvae config validate`` to compare with the kind the
        group moves (:attr:`LieGroup.data_kind <mcvae_framework.interfaces.LieGroup.data_kind>`).
        Cheap: a file's header at most. ``None`` (the default) when the config cannot tell;
        the model then checks the built dataset's ``image_shape``."""
        return None

    def data_summary(self, dataset) -> dict[str, str]:
        """Extra ``label: text`` lines ``mcvae data show`` prints about a data section and
        the ``dataset`` built from it (e.g. how its images are moved). Default: none."""
        return {}


@dataclass(frozen=True)
class Registration:
    kind: str
    tag: str
    config_class: type[ComponentConfig]
    factory: Callable[..., Any]
    plugin: str

    def build(self, config: ComponentConfig, **context):
        return self.factory(config, **context)


def tag_of(config_class: type) -> str:
    """The one value of a config class's ``type: Literal[...]`` field."""
    if not (isinstance(config_class, type) and issubclass(config_class, BaseModel)):
        raise PluginError(f"{config_class!r} is not a pydantic model class")
    field = config_class.model_fields.get("type")
    args = typing.get_args(field.annotation) if field is not None else ()
    if (
        field is None
        or typing.get_origin(field.annotation) is not typing.Literal
        or len(args) != 1
        or not isinstance(args[0], str)
    ):
        raise PluginError(
            f"config class {config_class.__module__}.{config_class.__qualname__} must "
            "declare `type: Literal['<tag>']` with exactly one string tag"
        )
    return args[0]


class Registry:
    """All components the loaded plugins registered, by kind and tag."""

    def __init__(self):
        self._entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        #: the ``ExperimentConfig`` class assembled from these entries; built on first use
        #: by :func:`mcvae_framework.config.experiment.experiment_config_class` and kept here, so it
        #: is rebuilt exactly when the registry is (a plugin registered or removed).
        self.experiment_class: type | None = None

    def add(self, kind: str, config_class, factory, plugin: str) -> Registration:
        if kind not in self._entries:
            raise PluginError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        tag = tag_of(config_class)
        if not callable(factory):
            raise PluginError(f"plugin {plugin!r}: factory for {kind} {tag!r} is not callable")
        known = self._entries[kind].get(tag)
        if known is not None:
            raise PluginError(
                f"two plugins register the {kind} tag {tag!r}: {known.plugin!r} and "
                f"{plugin!r}. Uninstall or disable one of them (MCVAE_PLUGINS lists the "
                "plugins to load)."
            )
        entry = Registration(kind, tag, config_class, factory, plugin)
        self._entries[kind][tag] = entry
        self.experiment_class = None  # assembled from the entries: stale now
        return entry

    def tags(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Registration]:
        return [self._entries[kind][tag] for tag in self.tags(kind)]

    def get(self, kind: str, tag: str) -> Registration:
        try:
            return self._entries[kind][tag]
        except KeyError:
            known = ", ".join(self.tags(kind)) or "(none registered)"
            raise PluginError(f"unknown {kind} type {tag!r}; known {kind} types: {known}") from None

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind in KINDS:
            tags = [e.tag for e in self.entries(kind) if e.plugin == plugin]
            if tags:
                out[kind] = tags
        return out

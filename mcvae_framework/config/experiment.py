"""Experiment configs: YAML/JSON files validated as a whole before anything runs.

The experiment's config class is assembled after plugins load: each component section
(``data``, ``group``, ``encoder``, ``decoder``, ``prior``) is a union of the registered
config classes, discriminated by ``type``. Errors name the file, the field path and what
is allowed.
"""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Optional, Union

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, create_model

from ..errors import ConfigError
from ..hookspecs import DATA_KINDS, KINDS
from .plugins import current_registry
from .registry import ComponentConfig, Registry
from .sections import ExperimentBase

#: sections that may be written as ``null`` (the plain-VAE baseline has no group).
NULLABLE = {"group"}


def _component_annotation(registry: Registry, kind: str):
    classes = [e.config_class for e in registry.entries(kind)]
    if not classes:
        return Any  # nothing registered: the tag pre-check reports it
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="type")]


def experiment_config_class(registry: Registry | None = None) -> type[ExperimentBase]:
    """The ``ExperimentConfig`` class for the loaded plugins (built once per registry)."""
    registry = registry or current_registry()
    if registry.experiment_class is None:
        fields = {}
        for kind in KINDS:
            ann = _component_annotation(registry, kind)
            fields[kind] = (Optional[ann], ...) if kind in NULLABLE else (ann, ...)
        registry.experiment_class = create_model("ExperimentConfig", __base__=ExperimentBase, **fields)
    return registry.experiment_class


def _tag_problems(registry: Registry, data: dict) -> list[tuple[str, str]]:
    """Unknown or missing ``type`` tags, answered with the list of known ones."""
    problems = []
    for kind in KINDS:
        section = data.get(kind)
        if section is None:
            continue
        known = registry.tags(kind)
        listing = ", ".join(known) if known else "(no plugin registers one)"
        if isinstance(section, ComponentConfig):
            continue
        if not isinstance(section, dict):
            problems.append((kind, f"expected a mapping with a `type` key, got {section!r}"))
        elif "type" not in section:
            problems.append((f"{kind}.type", f"missing; known {kind} types: {listing}"))
        elif section["type"] not in known:
            problems.append(
                (f"{kind}.type", f"unknown {kind} type {section['type']!r}; known {kind} types: "
                 f"{listing} (see `mcvae plugins`)")
            )
    return problems


def _format_loc(loc: Iterable) -> str:
    parts = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _section_class(registry: Registry | None, root, data: dict | None, loc: list):
    """The pydantic class that holds the field at ``loc`` (``loc`` without its last part
    leads to it), starting from ``root``; ``None`` when it cannot be told."""
    cls = root
    for i, part in enumerate(loc[:-1]):
        if cls is None:
            return None
        if i == 0 and registry is not None and part in KINDS and isinstance(cls, type) and issubclass(cls, ExperimentBase):
            section = (data or {}).get(part)
            tag = section.get("type") if isinstance(section, dict) else None
            cls = registry.get(part, tag).config_class if tag in registry.tags(part) else None
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        cls = _model_class(field.annotation) if field is not None else None
    return cls


def _model_class(annotation):
    """The pydantic model inside ``annotation`` (``Model`` or ``Model | None``), if one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _unknown_key_message(key, cls) -> str:
    fields = list(getattr(cls, "model_fields", {}) or {})
    close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6) if fields else []
    if close:
        return f"unknown key; did you mean `{close[0]}`? (see `mcvae config schema` for every field)"
    if fields:
        return ("unknown key (not a field of this section; its fields are " + ", ".join(f"`{f}`" for f in fields)
                + ")")
    return "unknown key (not a field of this section; check the spelling in `mcvae config schema`)"


def _missing_section_message(kind: str, registry: Registry | None) -> str:
    if registry is None or kind not in KINDS:
        return "required section is missing"
    known = registry.tags(kind)
    listing = ", ".join(known) if known else "(no plugin registers one)"
    extra = "; or `group: null` for no group (the plain-VAE baseline)" if kind in NULLABLE else ""
    return f"required section is missing; add `{kind}: {{type: ...}}` with one of the known {kind} types: {listing}{extra}"


def pydantic_problems(exc: ValidationError, skip_sections=(), data: dict | None = None,
                      registry: Registry | None = None, root=None) -> list[tuple[str, str]]:
    """``(field path, message)`` for each pydantic error, in the words a user needs.

    :param skip_sections: sections already reported (an unknown tag), left out here.
    :param data: the validated mapping; a discriminated union reports a member as
        ``group.se2.angle_deg`` where the user wrote ``group.angle_deg``, and the tag
        segment is dropped when it is that section's ``type``.
    :param registry: the registry the config was validated against: a missing component
        section is answered with its known tags.
    :param root: the validated class, to suggest a close field name for an unknown key.
    """
    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        if loc and loc[0] in skip_sections:
            continue
        section = data.get(loc[0]) if data is not None and loc and loc[0] in KINDS else None
        if isinstance(section, dict) and len(loc) > 1 and loc[1] == section.get("type"):
            del loc[1]
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key_message(loc[-1], _section_class(registry, root, data, loc))
        elif err["type"] == "missing":
            msg = _missing_section_message(str(loc[0]), registry) if len(loc) == 1 and root is not None and \
                issubclass(root, ExperimentBase) else ("required section is missing" if len(loc) == 1
                                                       else "required field is missing")
        elif "input" in err and err["type"] not in ("model_type", "value_error") and not isinstance(err["input"], dict):
            # a plugin's own ValueError already names the value; pydantic's built-in messages do not
            msg = f"{msg} (got {err['input']!r})"
        problems.append((_format_loc(loc), msg))
    return problems


def validate_config(data: Any, source: str | None = None, registry: Registry | None = None,
                    base_dir: str | Path | None = None):
    """Validate a config mapping into an ``ExperimentConfig`` or raise :class:`ConfigError`.

    :param base_dir: the folder relative paths in the config (a dataset's ``path``) are
        read from: the config file's folder. Plugins receive it as the pydantic validation
        context ``{"config_dir": ...}``; ``None`` leaves relative paths to the current folder.
    """
    registry = registry or current_registry()
    if not isinstance(data, dict):
        raise ConfigError([("", f"the top level must be a mapping of sections, got {type(data).__name__}")], source)
    tag_problems = _tag_problems(registry, data)
    cls = experiment_config_class(registry)
    try:
        config = cls.model_validate(data, context=_context(base_dir))
    except ValidationError as exc:
        bad = {p.split(".")[0] for p, _ in tag_problems}
        problems = tag_problems + pydantic_problems(exc, skip_sections=bad, data=data, registry=registry, root=cls)
        raise ConfigError(sorted(problems, key=_section_rank), source) from None
    if tag_problems:
        raise ConfigError(tag_problems, source)
    return config


def _context(base_dir) -> dict | None:
    return {"config_dir": str(Path(base_dir).resolve())} if base_dir is not None else None


def missing_resources(config) -> list[tuple[str, str]]:
    """``(field path, message)`` for what the components of ``config`` name that is
    missing on this machine (see :meth:`ComponentConfig.missing_resources`)."""
    problems = []
    for kind in KINDS:
        section = getattr(config, kind, None)
        if isinstance(section, ComponentConfig):
            problems += [(f"{kind}.{field}" if field else kind, msg) for field, msg in section.missing_resources()]
    return problems


def check_resources(config, source: str | None = None):
    """``config`` itself, or a :class:`ConfigError` (exit code 2) naming the file, each
    field whose file or folder is missing, and the fix."""
    problems = missing_resources(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def supervised_without_canonical(data_config) -> str:
    """Why ``loss.mode: supervised`` cannot train on ``data_config``, and the fix."""
    fix = data_config.without_canonical_images() if isinstance(data_config, ComponentConfig) else None
    return (f"'supervised' learns from each image's canonical (un-moved) image, but the {data_config.type!r} data "
            f"section yields no canonical images; {fix or 'use a data section whose items carry `canonical`'}, "
            "or set loss.mode: unsupervised")


def data_kind_problems(config) -> list[tuple[str, str]]:
    """The group moves one kind of data (``LieGroup.data_kind``: 2-D images or 3-D volumes)
    and the data section yields another (``ComponentConfig.data_kind``; a file's header at
    most is read): one problem naming both kinds and the fix."""
    data, group_config = getattr(config, "data", None), getattr(config, "group", None)
    if not isinstance(data, ComponentConfig) or not isinstance(group_config, ComponentConfig):
        return []
    actual = data.data_kind()
    if actual is None:
        return []
    group = current_registry().get("group", group_config.type).build(group_config)
    wanted = getattr(group, "data_kind", "image")
    if wanted == actual:
        return []
    return [("group.type", f"the group {group_config.type!r} moves {DATA_KINDS.get(wanted, wanted)}, but the "
             f"{data.type!r} data section yields {DATA_KINDS.get(actual, actual)}; pick a group for {actual}s "
             f"(see `mcvae plugins`) or data of {wanted}s")]


def compatibility_problems(config) -> list[tuple[str, str]]:
    """``(field path, message)`` for sections that validate one by one but cannot train
    together, as far as the config tells (the data plugin answers for its section through
    :meth:`ComponentConfig.without_canonical_images` and :meth:`ComponentConfig.data_kind`;
    nothing is read from disk but a data file's header)."""
    data = getattr(config, "data", None)
    problems = data_kind_problems(config)
    if config.loss.mode == "supervised" and isinstance(data, ComponentConfig) and data.without_canonical_images():
        problems.append(("loss.mode", supervised_without_canonical(data)))
    return problems


def check_runnable(config, source: str | None = None):
    """``config`` itself, or one :class:`ConfigError` (exit code 2) naming the file, each
    missing data file or folder (:func:`missing_resources`) and each pair of sections that
    cannot train together (:func:`compatibility_problems`), with the fix: what ``mcvae
    config validate`` and ``mcvae train`` check before anything is built."""
    problems = missing_resources(config) + compatibility_problems(config)
    if problems:
        raise ConfigError(problems, source)
    return config


def check_dataset_fits(config, dataset, source: str | None = None) -> None:
    """The same check on a built dataset (one given to the trainer directly): in
    supervised mode its items must carry ``canonical``. Reads one item, only then."""
    if config.loss.mode != "supervised" or len(dataset) == 0:
        return
    item = dataset[0]
    if not (isinstance(item, dict) and "canonical" in item):
        raise ConfigError([("loss.mode", supervised_without_canonical(config.data))], source)


SECTION_ORDER = (*KINDS, "model", "loss", "training")


def _section_rank(problem) -> int:
    """Problems are listed in the order a config file lists its sections."""
    head = problem[0].split(".")[0].split("[")[0]
    return SECTION_ORDER.index(head) if head in SECTION_ORDER else len(SECTION_ORDER)


def component_config(kind: str, data: Any, registry: Registry | None = None,
                     base_dir: str | Path | None = None) -> ComponentConfig:
    """Validate one component section (a dict with ``type``) into its config object.

    :param base_dir: the folder relative paths are read from (see :func:`validate_config`).
    """
    registry = registry or current_registry()
    if isinstance(data, ComponentConfig):
        return data
    problems = _tag_problems(registry, {kind: data})
    if problems:
        raise ConfigError(problems, f"{kind} config")
    entry = registry.get(kind, data["type"])
    try:
        return TypeAdapter(entry.config_class).validate_python(data, context=_context(base_dir))
    except ValidationError as exc:
        problems = [(f"{kind}.{p}" if p else kind, m)
                    for p, m in pydantic_problems(exc, registry=registry, root=entry.config_class)]
        raise ConfigError(problems, f"{kind} config") from None


# ---------------------------------------------------------------- files and overrides


def read_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON file into a dict, with errors naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", "file not found" if not path.exists() else "not a file")], str(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([("", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")], str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"malformed YAML{where}: {problem}")], str(path)) from None
    if data is None:
        raise ConfigError([("", "the file is empty; an experiment needs the sections " + ", ".join(KINDS))], str(path))
    if not isinstance(data, dict):
        raise ConfigError([("", f"the top level must be a mapping of sections, got {type(data).__name__}")], str(path))
    return data


def apply_overrides(data: dict, overrides: Iterable[str], source: str | None = None) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars) to a config dict."""
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([("--set", f"{item!r} is not of the form section.field=value")], source)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    [("--set", f"cannot set {key!r}: {'.'.join(parts[:i + 1])} is {child!r}, not a section")], source
                )
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: Iterable[str] = ()):
    """Load, override and validate an experiment config file.

    :param path: a ``.yaml``/``.yml`` or ``.json`` file.
    :param overrides: ``"section.field=value"`` strings applied before validation.
    :raises ConfigError: naming the file, each bad field's path and what is allowed.

    Relative paths in the file (and in the overrides) are read from the file's folder.
    """
    data = apply_overrides(read_config_file(path), overrides, source=str(path))
    return validate_config(data, source=str(path), base_dir=Path(path).parent)


def config_to_dict(config) -> dict:
    """The resolved config (defaults filled in) as plain JSON-able data, sections in the
    order a config file lists them."""
    data = config.model_dump(mode="json")
    return {key: data[key] for key in sorted(data, key=lambda k: _section_rank((k, "")))}

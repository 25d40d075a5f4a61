"""Generate the reference pages, and MkDocs hooks (``hooks:`` in mkdocs.yml) that keep
the built site in step with the code.

The generated Markdown is **committed**, so that ``docs/configuration.md`` and
``docs/cli.md`` read on GitHub as they do on the site. Each generated block lies between
``<!-- mcvae:NAME -->`` and ``<!-- /mcvae:NAME -->``; ``python scripts/docs_hooks.py``
rewrites every block from the code, ``python scripts/docs_hooks.py --check`` exits 1 when
one is stale (a test does the same), and while the site builds the hook replaces each
block by a fresh one, so the site never shows a stale reference. The blocks:

* ``core-sections`` (configuration page): the core's own sections (``model``, ``loss``,
  ``training``, ...), one table per section from its pydantic model;
* ``components``: for every component kind, every config class the built-in plugins
  register, with its fields, types, defaults, constraints and descriptions (taken from
  ``Field(description=...)``);
* ``ready-configs``: every ready experiment config under ``configs/``;
* ``cli`` (CLI page): every command of ``mcvae``, its usage, help and options;
* ``figure-NAME`` (home, quickstart and own-images pages): a figure made by
  ``scripts/docs_figures.py`` and its caption, from ``docs/images/figures.json`` (the
  manifest that script writes from its runs).

Only the plugins shipped in the ``mcvae-framework`` distribution are listed, so the page
is the same whichever third-party plugins happen to be installed where the site builds.

Every figure of the docs is made by ``scripts/docs_figures.py`` from runs of the current
code; a figure block whose caption no longer matches the manifest is stale like any other
block, and ``tests/test_docs.py`` also checks the manifest's configs against today's.
"""

from __future__ import annotations

import enum
import html
import importlib.metadata
import inspect
import json
import re
import types
import typing
from pathlib import Path

try:
    from mkdocs.exceptions import PluginError
except ImportError:  # generating or checking the committed pages needs no mkdocs
    PluginError = RuntimeError
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

CONFIG_PAGE = "configuration.md"
CLI_PAGE = "cli.md"
#: generated blocks of each page, in the order they appear.
BLOCKS = {CONFIG_PAGE: ("core-sections", "components", "ready-configs"), CLI_PAGE: ("cli",),
          "index.md": ("figure-home",), "quickstart.md": ("figure-class-averages", "figure-gallery"),
          "own-images.md": ("figure-cryo-gallery",)}
#: the manifest of the figures (written by scripts/docs_figures.py), relative to docs/.
FIGURES = "images/figures.json"
DISTRIBUTION = "mcvae-framework"

#: what each component kind is for, shown above its components.
KIND_INTROS = {
    "data": "Where the images come from (and, optionally, the seeded group transform that moves them).",
    "group": "The Lie group of the pose latent `tau`; `null` gives the plain-VAE baseline.",
    "encoder": "The backbone that reads images; the model puts the three posterior heads on top.",
    "decoder": "Maps the invariant latents `(z_c, z_v)` to a canonical image in `[0, 1]`.",
    "prior": "The mixture prior of the cluster latent `z_c`; its components are the clusters.",
}

_root: Path | None = None


# ---------------------------------------------------------------- mkdocs hook functions


def on_config(config):
    global _root
    _root = Path(config["config_file_path"]).resolve().parent
    return config


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri not in BLOCKS:
        return markdown
    return fill_blocks(markdown, page.file.src_uri, _root or Path.cwd())


def block_markdown(name: str, root: Path) -> str:
    """The freshly generated Markdown of one block."""
    if name == "cli":
        return cli_markdown()
    if name.startswith("figure-"):
        return figure_markdown(name[len("figure-"):], root)
    registry = builtin_registry()
    if name == "core-sections":
        return core_sections_markdown(registry)
    if name == "components":
        return components_markdown(registry)
    if name == "ready-configs":
        return ready_configs_markdown(root)
    raise PluginError(f"unknown generated block {name!r}")


def _block_pattern(name: str):
    return re.compile(rf"(<!-- mcvae:{re.escape(name)} -->\n)(.*?)(<!-- /mcvae:{re.escape(name)} -->)", re.S)


def fill_blocks(markdown: str, page: str, root: Path) -> str:
    """``markdown`` of ``page`` with every generated block regenerated."""
    for name in BLOCKS[page]:
        pattern = _block_pattern(name)
        if not pattern.search(markdown):
            raise PluginError(f"docs/{page} lost its generated block <!-- mcvae:{name} --> ... "
                              f"<!-- /mcvae:{name} -->")
        fresh = block_markdown(name, root).strip("\n") + "\n"
        markdown = pattern.sub(lambda m: m.group(1) + "\n" + fresh + "\n" + m.group(3), markdown, count=1)
    return markdown


def stale_pages(root: Path) -> list[str]:
    """The committed pages whose generated blocks differ from the code's."""
    stale = []
    for page in BLOCKS:
        path = root / "docs" / page
        text = path.read_text(encoding="utf-8")
        if fill_blocks(text, page, root) != text:
            stale.append(f"docs/{page}")
    return stale


def write_pages(root: Path) -> list[str]:
    """Regenerate every block of the committed pages; returns the pages that changed."""
    changed = []
    for page in BLOCKS:
        path = root / "docs" / page
        text = path.read_text(encoding="utf-8")
        fresh = fill_blocks(text, page, root)
        if fresh != text:
            path.write_text(fresh, encoding="utf-8")
            changed.append(f"docs/{page}")
    return changed


# ---------------------------------------------------------------- the CLI reference


def cli_markdown() -> str:
    """Every command of ``mcvae``: a section per command (``mcvae config validate`` has the
    anchor ``mcvae-config-validate``), its usage, its help and a table of its options."""
    import click

    from mcvae_framework.cli import cli

    out = []

    def walk(command, path, parent_ctx):
        # the command's own context settings (`-h` as well as `--help`), as `mcvae` itself makes
        # them; without them the help option's record depends on whether click cached it already
        ctx = click.Context(command, info_name=path[-1], parent=parent_ctx, **command.context_settings)
        name = " ".join(path)
        # the heading's own anchor (mkdocs and GitHub alike) is `mcvae-config-validate`
        out.append(f"{'#' * min(len(path) + 2, 5)} `{name}`\n")
        pieces = " ".join(command.collect_usage_pieces(ctx))
        out.append(f"```\nUsage: {name} {pieces}\n```\n")
        help_text = inspect.cleandoc(command.help or "")
        if help_text:
            out.append(help_text.replace("\b\n", "") + "\n")
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            flags, description = record
            rows.append(f"| `{flags}` | {_cell(description)} |")
        if rows:
            out.append("| option | description |\n| --- | --- |\n" + "\n".join(rows) + "\n")
        if isinstance(command, click.Group):
            subs = sorted(command.commands.items())
            out.append("Commands: " + ", ".join(f"[`{' '.join(path + (sub,))}`](#{_slug(' '.join(path + (sub,)))})"
                                                 for sub, _ in subs) + ".\n")
            for sub, child in subs:
                walk(child, path + (sub,), ctx)

    walk(cli, ("mcvae",), None)
    return "\n".join(out)


def figure_markdown(name: str, root: Path) -> str:
    """A figure of the manifest and its caption (as scripts/docs_figures.py wrote them)."""
    manifest = root / "docs" / FIGURES
    if not manifest.is_file():
        raise PluginError(f"docs/{FIGURES} is missing: run `python scripts/docs_figures.py`")
    entry = json.loads(manifest.read_text(encoding="utf-8")).get(name)
    if entry is None:
        raise PluginError(f"docs/{FIGURES} has no figure {name!r}: run `python scripts/docs_figures.py`")
    return f"![{entry['alt']}]({entry['file']})\n\n*{entry['caption']}*"


# ---------------------------------------------------------------- the registry to document


def builtin_registry():
    """A registry filled only by the entry points of the ``mcvae-framework`` distribution."""
    from mcvae_framework.config.plugins import ENTRY_POINT_GROUP, create_plugin_manager

    names = [
        ep.name
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and _normalise(ep.dist.name) == _normalise(DISTRIBUTION)
    ]
    if not names:
        raise PluginError(
            f"no `{ENTRY_POINT_GROUP}` entry points of the {DISTRIBUTION} distribution were found: "
            "install the project (`pip install -e .[docs]`) before building the docs"
        )
    pm = create_plugin_manager(load_entry_points=False)
    pm.load_entry_points(only=names)
    return pm.registry


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------- markdown generation


def core_sections_markdown(registry) -> str:
    from mcvae_framework.config.experiment import experiment_config_class
    from mcvae_framework.hookspecs import KINDS

    cls = experiment_config_class(registry)
    out = []
    for name, field in cls.model_fields.items():
        if name in KINDS:
            continue
        model = _model_class(field.annotation)
        if model is None:
            continue
        out.append(f"### `{name}`\n")
        out.append(_doc(model))
        out.append(model_table(model, path=name))
    return "\n".join(out)


def components_markdown(registry) -> str:
    from mcvae_framework.hookspecs import HOOK_KINDS, KINDS

    hook_of = {kind: hook for hook, kind in HOOK_KINDS.items()}
    seen: dict = {}
    out = []
    for kind in KINDS:
        entries = registry.entries(kind)
        out.append(f"### `{kind}`\n")
        out.append(KIND_INTROS.get(kind, "") + f" Plugins add more through `{hook_of[kind]}`.\n")
        if not entries:
            out.append("*No built-in plugin registers one yet.*\n")
            continue
        out.append("| `type` | config class | summary |\n| --- | --- | --- |")
        for entry in entries:
            cls = entry.config_class
            summary = _cell(_first_sentence(_doc(cls)))
            out.append(f"| [`{entry.tag}`](#{_anchor(kind, entry.tag)}) | `{cls.__name__}` | {summary} |")
        out.append("")
        for entry in entries:
            cls = entry.config_class
            out.append(f'<a id="{_anchor(kind, entry.tag)}"></a>\n')
            out.append(f"#### `{kind}: {entry.tag}`\n")
            out.append(
                f"Registered by plugin `{entry.plugin}` as `{cls.__module__}.{cls.__qualname__}`.\n"
            )
            out.append(_doc(cls))
            out.append(model_table(cls, path=kind, seen=seen))
    return "\n".join(out)


def ready_configs_markdown(root: Path) -> str:
    files = [p for folder in (root / "configs", root / "configs" / "templates")  # templates: a file to supply
             for p in sorted(folder.glob("*")) if p.suffix in (".yaml", ".yml", ".json")]
    if not files:
        return "*No ready configs yet.*\n"
    out = ["| file | what it runs |\n| --- | --- |"]
    for path in files:
        rel = path.relative_to(root).as_posix()
        out.append(f"| [`{rel}`](#{_slug(rel)}) | {_cell(_leading_comment(path)) or '&nbsp;'} |")
    out.append("")
    for path in files:
        rel = path.relative_to(root).as_posix()
        lang = "json" if path.suffix == ".json" else "yaml"
        text = path.read_text(encoding="utf-8").rstrip()
        out.append(f'<a id="{_slug(rel)}"></a>\n')
        out.append(f"#### `{rel}`\n")
        out.append(f"{_leading_comment(path)} Train it with `mcvae train {rel}`.\n")
        out.append(f'??? example "{path.name}"\n')
        out.append(f"    ```{lang}")
        out.extend(("    " + line).rstrip() for line in text.splitlines())
        out.append("    ```\n")
    return "\n".join(out)


def model_table(model: type[BaseModel], path: str, seen: dict | None = None) -> str:
    """A table of ``model``'s fields, then one sub-table per nested model field.

    ``seen`` maps nested model classes already shown to their anchors, so that a block
    every dataset shares (the ``transform``) is shown once and linked to afterwards.
    """
    seen = {} if seen is None else seen
    rows = ["| field | type | default | constraints | description |", "| --- | --- | --- | --- | --- |"]
    nested = []
    for name, field in model.model_fields.items():
        description = field.description or ("the tag of this component" if name == "type" else "")
        rows.append(
            f"| `{name}` | {_cell(type_text(field.annotation))} | {default_text(field)} | "
            f"{_cell(constraints_text(field))} | {_cell(description)} |"
        )
        sub = _model_class(field.annotation)
        if sub is not None and sub is not model:
            nested.append((name, sub))
    out = ["\n".join(rows), ""]
    for name, sub in nested:
        if sub in seen:
            out.append(f"**`{path}.{name}`** ({sub.__name__}): as [above](#{seen[sub]}).\n")
            continue
        seen[sub] = _slug(f"{path}.{name}-{sub.__name__}")
        out.append(f'<a id="{seen[sub]}"></a>**`{path}.{name}`** ({sub.__name__}): {_doc(sub)}\n')
        out.append(model_table(sub, f"{path}.{name}", seen))
    return "\n".join(out)


def type_text(annotation) -> str:
    """A reader's spelling of a type annotation: ``"so2"``, ``list[float]``, ``int | null``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(to_jsonable_python(a)) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        inner = ", ".join("..." if a is Ellipsis else type_text(a) for a in args)
        return f"{name}[{inner}]" if args else name
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(json.dumps(to_jsonable_python(m.value)) for m in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def default_text(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return "(computed)"
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{json.dumps(to_jsonable_python(value))}`"


_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("multiple_of", "multiple of"),
           ("min_length", "min length"), ("max_length", "max length"), ("pattern", "matches"))


def constraints_text(field) -> str:
    parts = []
    for item in field.metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{word} `{value}`")
    return ", ".join(parts)


# ---------------------------------------------------------------- small helpers


def _model_class(annotation):
    """The pydantic model inside ``annotation`` (``Model``, ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0]
    return None


def _doc(cls) -> str:
    doc = cls.__dict__.get("__doc__")  # the class's own docstring, not pydantic's base one
    return inspect.cleandoc(doc) + "\n" if doc else ""


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return match.group(1) if match else text


def _cell(text: str) -> str:
    """One table cell: on one line, pipes escaped, and Markdown and HTML characters
    outside code spans escaped (descriptions are plain text)."""
    text = " ".join(str(text).split())
    out, end = [], 0
    for span in re.finditer(r"(`+).+?\1", text):  # code spans, ``double`` ones included
        out += [_escape_markdown(text[end:span.start()]), span.group(0)]
        end = span.end()
    out.append(_escape_markdown(text[end:]))
    return "".join(out).replace("|", "\\|")


def _escape_markdown(text: str) -> str:
    """Plain text for Markdown: no emphasis from ``prior_*_std``, no tags from ``<root>``."""
    text = re.sub(r"([\\*_\[\]])", r"\\\1", text)
    return html.escape(text, quote=False)


def _anchor(kind: str, tag: str) -> str:
    return _slug(f"{kind}-{tag}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _leading_comment(path: Path) -> str:
    """The comment block at the top of a YAML file: its one-paragraph description."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(l for l in lines if l)


if __name__ == "__main__":
    import sys

    ROOT = Path(__file__).resolve().parents[1]
    if sys.argv[1:] == ["--check"]:
        stale = stale_pages(ROOT)
        if stale:
            print(f"stale: {', '.join(stale)}; run `python scripts/docs_hooks.py` and commit the result")
            raise SystemExit(1)
        print("the generated reference pages are up to date")
    elif sys.argv[1:]:
        raise SystemExit("usage: python scripts/docs_hooks.py [--check]")
    else:
        changed = write_pages(ROOT)
        print("rewrote " + ", ".join(changed) if changed else "the generated reference pages were up to date")

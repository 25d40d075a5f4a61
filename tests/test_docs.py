"""The documentation keeps up with the code (in the manner of datasette's test_docs.py).

* every hook in ``hookspecs.py`` has its own section on the plugin page;
* the site builds with ``mkdocs build --strict`` (every warning is an error);
* in the built site: every CLI command and option is in the CLI reference, every
  registered component and each of its fields is in the configuration reference, every
  ready config is shown, and every public name, interface and contract kit is in the API
  reference.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import mcvae_framework
from mcvae_framework import hookspecs, interfaces, testing
from mcvae_framework.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def hook_names() -> list[str]:
    """Every hook specification: the functions pluggy's spec marker decorated."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return sorted(name for name, obj in vars(hookspecs).items() if callable(obj) and hasattr(obj, marker))


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ("mcvae",)):
    """``(("mcvae", "config", "validate"), command)`` for every command in the click tree."""
    yield prefix, group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from command_paths(command, prefix + (name,))


def page_text(site: Path, page: str) -> str:
    """The text of a built page, tags stripped and entities decoded."""
    raw = (site / page / "index.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def squash(text: str) -> str:
    """``text`` without whitespace: code blocks are split into highlighted tokens."""
    return "".join(text.split())


def page_ids(site: Path, page: str) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', (site / page / "index.html").read_text(encoding="utf-8")))


# ---------------------------------------------------------------- source checks


def test_hookspecs_are_found():
    # Guards the walk below: a silent empty list would make the next test pass vacuously.
    assert set(hook_names()) >= set(hookspecs.HOOK_KINDS)


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_on_the_plugin_page(hook):
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert re.search(rf"^###\s+`?{hook}\(register\)`?\s*$", text, re.M), (
        f"docs/plugins.md has no `### {hook}(register)` section: document the hook there"
    )


def kit_knobs() -> dict[str, list[str]]:
    """Every knob (public class attribute that is not a test) of every contract kit."""
    knobs = {}
    for name in testing.__all__:
        kit = getattr(testing, name)
        knobs[name] = sorted({key for cls in kit.__mro__ for key, value in vars(cls).items()
                              if not key.startswith(("_", "test")) and not callable(value)
                              and not isinstance(value, (classmethod, staticmethod, property))})
    return knobs


def test_the_plugin_page_names_everything_a_plugin_meets():
    import mcvae_framework.errors as errors

    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    wanted = ["item_names", "source_indices", "item_splits", "class_names", 'split="all"', "missing_resources()",
              '{"config_dir":', "--set 'encoder={type:", f"now `{mcvae_framework.PLUGIN_API_VERSION}`",
              "DeprecationWarning"]
    wanted += [name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)
               and obj.__module__ == errors.__name__]
    missing = [piece for piece in wanted if piece not in text]
    missing += [knob for knobs in kit_knobs().values() for knob in knobs if not re.search(rf"`{knob}\b", text)]
    assert not missing, f"docs/plugins.md does not mention {missing}"
    assert kit_knobs()["DatasetContract"] == ["dataset_config", "n_checked", "splits"]  # the check can fail


def test_the_epoch_counts_in_the_docs_are_the_quickstarts():
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    pretrain, epochs = config["loss"]["pretrain_epochs"], config["training"]["epochs"]
    found = 0
    for path in (ROOT / "README.md", DOCS / "quickstart.md", DOCS / "configuration.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        for said in re.findall(r"(\d+) pretraining \+ (\d+) training epochs(?: \((\d+) in all)?", text):
            found += 1
            assert said[:2] == (str(pretrain), str(epochs)), f"{path.name} says {said}, the quickstart has " \
                f"{pretrain} + {epochs}"
            assert not said[2] or int(said[2]) == pretrain + epochs, f"{path.name} says {said}"
        for said in re.findall(r"`pretrain_epochs: (\d+)` and `epochs: (\d+)` make (\d+)", text):
            found += 1
            assert said == (str(pretrain), str(epochs), str(pretrain + epochs)), f"{path.name} says {said}"
    assert found >= 4


@pytest.mark.parametrize("path", sorted((DOCS / "api").glob("*.md")), ids=lambda p: p.name)
def test_every_api_section_has_prose_before_its_directives(path):
    # on GitHub a `::: module` directive shows as it is: each section says in words what it holds
    sections = re.split(r"^#+ .*$", path.read_text(encoding="utf-8"), flags=re.M)
    for section in sections:
        before = section.split("\n::: ", 1)[0] if "\n::: " in "\n" + section else None
        if before is None:
            continue
        prose = [line for line in before.splitlines() if line.strip() and not line.startswith(("```", "    "))]
        assert prose, f"{path.name}: a section starts with a `:::` directive and no sentence:\n{section[:200]}"


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        elif isinstance(node, list):
            for value in node:
                yield from pages(value)

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert in_nav <= on_disk, f"nav names missing pages: {sorted(in_nav - on_disk)}"
    assert on_disk <= in_nav, f"pages not in the nav: {sorted(on_disk - in_nav)}"


def test_the_committed_reference_pages_are_not_stale():
    """docs/configuration.md and docs/cli.md hold generated Markdown (so that they read on
    GitHub): it must equal what the code generates now."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.pop(0)
    assert docs_hooks.stale_pages(ROOT) == [], (
        "the generated reference is stale: run `python scripts/docs_hooks.py` and commit the result"
    )
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert "## `mcvae`" in text.split("<!-- mcvae:cli -->", 1)[1], "docs/cli.md has an empty CLI block"


def test_a_figures_run_stays_current_through_new_fields_left_at_their_default_only():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_figures
    finally:
        sys.path.pop(0)
    run = {"graph": {"enabled": True, "neighbours": 7}, "data": {"type": "mnist5k"}}
    assert docs_figures.same_config(run, {**run, "graph": {**run["graph"], "pose_warmup_steps": 0}})
    assert not docs_figures.same_config(run, {**run, "graph": {**run["graph"], "pose_warmup_steps": 10}})
    assert not docs_figures.same_config(run, {**run, "graph": {**run["graph"], "neighbours": 8}})
    assert not docs_figures.same_config(run, {**run, "data": {"type": "mnist5k", "limit": 100}})  # not a core section


def test_every_figure_comes_from_a_run_of_todays_configs():
    """Every figure under docs/images is in the manifest scripts/docs_figures.py writes, sits
    in a page's figure block (whose caption the stale-page test above compares with the
    manifest), and was made from a run of the config that is current today: change
    configs/quickstart.yaml (or the cryo demo's config) and this fails until the script is
    run again."""
    import json

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_figures
        import docs_hooks
    finally:
        sys.path.pop(0)
    manifest = json.loads((DOCS / docs_hooks.FIGURES).read_text(encoding="utf-8"))
    in_blocks = {name[len("figure-"):] for blocks in docs_hooks.BLOCKS.values() for name in blocks
                 if name.startswith("figure-")}
    assert set(manifest) == in_blocks, "a figure of the manifest is in no page, or a page names a missing one"
    pictures = {p.relative_to(DOCS).as_posix() for p in (DOCS / "images").glob("*.png")}
    assert pictures == {entry["file"] for entry in manifest.values()}, (
        "every picture under docs/images must be made by scripts/docs_figures.py (and only those)")
    for name, entry in manifest.items():
        assert (DOCS / entry["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", entry["file"]
        run = entry["run"]
        assert docs_figures.same_config(run["config"], docs_figures.todays_config(run["config_file"])), (
            f"figure {name!r} was made from a run of another config than today's {run['config_file']}: "
            "run `python scripts/docs_figures.py` and commit docs/images")
        if "accuracy" in run:
            assert f"{run['accuracy']:.3f}" in entry["caption"], f"the caption of {name!r} does not quote its run"


# ---------------------------------------------------------------- the built site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with ``mkdocs build --strict`` into a temporary folder."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed: pip install -e ".[docs]" (CI installs it)')
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_site_builds_strictly(site):
    for page in ("index.html", "install/index.html", "quickstart/index.html", "own-images/index.html",
                 "concepts/index.html",
                 "configuration/index.html", "cli/index.html", "plugins/index.html", "benchmarks/index.html"):
        assert (site / page).is_file(), page


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in command_paths()])
def test_every_cli_command_and_option_is_in_the_cli_reference(site, path):
    command = dict((" ".join(p), c) for p, c in command_paths())[path]
    assert path.replace(" ", "-") in page_ids(site, "cli"), f"`{path}` has no section in the CLI reference"
    text = page_text(site, "cli")
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            flag = max(param.opts, key=len)
            assert flag in text, f"option {flag} of `{path}` is missing from the CLI reference"


def test_configuration_reference_covers_every_component_and_field(site):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.pop(0)
    registry = docs_hooks.builtin_registry()
    ids = page_ids(site, "configuration")
    text = page_text(site, "configuration")
    # Markdown turns `code` and \| into tags and plain characters: compare without
    # whitespace, backticks and escapes.
    squashed = squash(text)
    from mcvae_framework.hookspecs import KINDS

    n_components = 0
    for kind in KINDS:
        for entry in registry.entries(kind):
            n_components += 1
            assert f"{kind}-{entry.tag}".replace("_", "-") in ids, f"no section for {kind} `{entry.tag}`"
            for field, info in entry.config_class.model_fields.items():
                assert field in text, f"field {kind}.{field} of `{entry.tag}` is not in the reference"
                if info.description:
                    wanted = squash(re.sub(r"[`\\]", "", info.description))
                    assert wanted in squashed, (
                        f"the description of {kind}.{field} of `{entry.tag}` is not in the reference"
                    )
    assert n_components >= 5, "the reference was generated from an (almost) empty registry"
    for section in ("model", "loss", "training"):
        assert section in ids, f"core section `{section}` is missing"


def test_every_ready_config_is_in_the_configuration_reference(site):
    text = page_text(site, "configuration")
    for path in sorted((ROOT / "configs").glob("*.y*ml")) + sorted((ROOT / "configs" / "templates").glob("*.y*ml")):
        name = path.relative_to(ROOT).as_posix()
        assert name in text, f"{name} is not shown"


def test_plugin_page_shows_the_example_distributions(site):
    text = squash(page_text(site, "plugins"))
    # Included verbatim from examples/ by pymdownx.snippets.
    for line in (
        '[project.entry-points."mcvae_framework"]',
        'translations = "mcvae_translations"',
        'laplace-prior = "mcvae_laplace"',
        "class TestTranslation2(LieGroupContract):",
        "class TestLaplaceMixture(MixturePriorContract):",
        "def mcvae_register_groups(register):",
        "def mcvae_register_priors(register):",
    ):
        assert squash(line) in text, f"the plugin page does not show `{line}` from examples/"


def test_public_api_interfaces_and_kits_are_in_the_api_reference(site):
    core = page_text(site, "api/core")
    for name in mcvae_framework.__all__:
        assert name in core, f"mcvae_framework.{name} is not in docs/api/core.md"
    ids = page_ids(site, "api/interfaces")
    for name in interfaces.__all__:
        assert f"mcvae_framework.interfaces.{name}" in ids, f"interface {name} is not in docs/api/interfaces.md"
    kit_ids = " ".join(page_ids(site, "api/testing"))
    for name in testing.__all__:
        assert re.search(rf"mcvae_framework\.testing\.\w+\.{name}\b", kit_ids), f"{name} is not in docs/api/testing.md"
    hook_ids = page_ids(site, "api/hookspecs")
    for hook in hook_names():
        assert f"mcvae_framework.hookspecs.{hook}" in hook_ids, f"{hook} is not in docs/api/hookspecs.md"

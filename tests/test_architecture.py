"""The import rules of docs/architecture.md, checked by parsing the source (``ast``):

* plugins (the built-ins and the examples) import only the public API;
* the core never names a plugin's tag in its code;
* the layers are sub-packages of ``mcvae_framework``, and a package imports only the
  packages below it (``LAYER_RULES``): the report layer never reaches the trainer, the
  model never reaches either, configs reach nothing but the top;
* at most eight modules at the top; no core module over ~450 lines, no class over ~250.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mcvae_framework.hookspecs import KINDS
from mcvae_framework.config.plugins import create_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "mcvae_framework"

#: what a plugin may import from the framework.
PUBLIC_API = {"mcvae_framework", "mcvae_framework.interfaces", "mcvae_framework.errors", "mcvae_framework.testing",
              "mcvae_framework.geomstats_bridge"}
#: the modules at the top of the package (the public API a plugin meets) and the package's
#: own ``__init__``: every package may import them.
TOP = "(top)"
#: each sub-package and the packages it may import (besides itself and the top). The
#: commands of ``mcvae`` (``cli``) may import every layer; nothing imports ``cli``.
LAYER_RULES = {
    "config": set(),
    "interfaces": {"config"},
    "runtime": set(),
    "graph": {"config"},
    "model": {"config"},
    "report": {"config", "runtime", "model"},
    "train": {"config", "runtime", "model", "graph", "report"},
    "testing": {"config", "interfaces"},
    "estimator": {"config", "runtime", "model", "graph", "train", "report"},
    "cli": {"config", "runtime", "model", "graph", "train", "report", "estimator"},
}
MAX_TOP_MODULES = 8
#: "about 450" and "about 250" (the issue that set them says ~): a little slack, not a loophole.
MAX_MODULE_LINES, MAX_CLASS_LINES = 460, 260


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Every module ``path`` (module ``name``) imports, relative imports resolved; for
    ``from X import y`` also ``X.y`` when that is a module of the core."""
    modules = core_modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    return found


def core_modules() -> dict[str, Path]:
    return {module_name(p, ROOT): p for p in CORE.rglob("*.py")}


def test_plugins_import_only_the_public_api():
    sources = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py"),
               *(ROOT / "tests" / "third_party").rglob("*.py")]
    assert sources
    broken = []
    for path in sources:
        for module in imported_modules(path, module_name(path, path.parent)):
            if module.startswith("mcvae_framework") and module not in PUBLIC_API:
                broken.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not broken, "plugins may import only " + ", ".join(sorted(PUBLIC_API)) + ":\n" + "\n".join(broken)


def _code_strings(tree: ast.AST):
    """String constants that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_core_never_names_a_plugin_tag():
    registry = create_plugin_manager(load_entry_points=True).registry
    tags = {entry.tag for kind in KINDS for entry in registry.entries(kind)}
    assert {"image_folder", "arrays", "so2"} <= tags  # the built-ins are loaded: the check can fail
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(sorted(map(re.escape, tags), key=len, reverse=True))
                         + r")(?![\w/-])")
    named = [f"{path.relative_to(ROOT)}:{node.lineno} names {pattern.search(node.value).group(1)!r}"
             for path in CORE.rglob("*.py") for node in _code_strings(ast.parse(path.read_text(encoding="utf-8")))
             if pattern.search(node.value)]
    assert not named, "the core goes through the plugin interfaces, never a tag:\n" + "\n".join(named)


#: the run folder's file names as path parts (prose in messages may name them), spelled once:
#: mcvae_framework/runtime/run_layout.py.
RUN_FOLDER_NAMES = re.compile(r"^(last|best|previous)\.pt$|^(config\.json|metrics\.csv|train\.log|report\.json|"
                              r"report\.md|checkpoints|tensorboard|plots|predictions)$|^checkpoints/")


def test_the_run_folder_layout_is_spelled_once():
    layout = CORE / "runtime" / "run_layout.py"
    spelled = [f"{path.relative_to(ROOT)}:{node.lineno} spells {node.value!r}"
               for path in CORE.rglob("*.py") if path != layout
               for node in _code_strings(ast.parse(path.read_text(encoding="utf-8")))
               if RUN_FOLDER_NAMES.search(node.value)]
    assert not spelled, "use runtime.run_layout.RunLayout for the run folder's paths:\n" + "\n".join(spelled)
    assert any(RUN_FOLDER_NAMES.search(node.value) for node in _code_strings(ast.parse(layout.read_text())))


def package_of(module: str) -> str:
    """The layer a core module belongs to: its sub-package, or the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (CORE / parts[1]).is_dir()) else TOP


def test_every_sub_package_has_a_layer_rule():
    packages = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYER_RULES), "add the new package to LAYER_RULES (and docs/architecture.md)"
    assert len(packages) >= 6


def test_packages_import_only_the_layers_below_them():
    modules = core_modules()
    broken = []
    for name, path in sorted(modules.items()):
        own = package_of(name)
        allowed = LAYER_RULES.get(own, set(LAYER_RULES)) | {own, TOP}
        for imported in sorted(imported_modules(path, name)):
            if imported in modules and package_of(imported) not in allowed:
                broken.append(f"{name} imports {imported} ({own} -> {package_of(imported)})")
    assert not broken, "a layer imports one above it (see LAYER_RULES):\n" + "\n".join(broken)


def test_the_layer_rules_are_acyclic_and_keep_the_report_off_the_trainer():
    # the rules themselves: following them from the report layer never reaches train
    reached, todo = set(), ["report"]
    while todo:
        for nxt in LAYER_RULES[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert "train" not in reached and "report" not in reached and "cli" not in reached


def test_few_modules_at_the_top():
    top = sorted(p.name for p in CORE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"move some of {top} into a layer package"


def test_imports_are_resolved_as_expected():
    # the checker itself: relative imports from a sub-package and of a sibling module resolve
    name = "mcvae_framework.cli.train_cmd"
    assert "mcvae_framework.train.trainer" in imported_modules(core_modules()[name], name)
    name = "mcvae_framework.report.evaluation"
    assert "mcvae_framework.geomstats_bridge" in imported_modules(core_modules()["mcvae_framework.report.pose_evaluation"],
                                                                    "mcvae_framework.report.pose_evaluation")
    assert "mcvae_framework.report.inference" in imported_modules(core_modules()[name], name)


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_modules_and_classes_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it along its seams"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{path.name}: class {node.name} has {length} lines"

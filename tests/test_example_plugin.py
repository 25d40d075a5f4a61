"""The third-party plugin distributions under ``examples/`` work as a user would use them.

The examples are ``pip install``-ed into a fresh virtual environment, then, from that
environment: ``mcvae plugins`` lists them, a config using their tags validates (and a bad
one is refused), that config trains for one epoch, and each example's own tests -- its
contract kit included -- pass. The axis-scaling group, which has no rotation, also goes
through ``mcvae evaluate``, ``mcvae plot`` and ``mcvae predict``, and its report carries
its own error key and no rotation error.

The temporary environment must see the framework and its dependencies, which live in
whatever environment runs this test (a project ``.venv`` here, another one in CI), not in
the system interpreter, so ``--system-site-packages`` is not enough. Instead a ``.pth``
file in the new environment calls ``site.addsitedir`` on this interpreter's site
directories: they are appended after the new environment's own ``site-packages`` and
their ``.pth`` files (an editable install's among them) are processed, so the framework,
its built-in plugins' entry points and pip/setuptools are all visible there, while what
``pip install`` puts in the new environment stays private to it.

Deselect with ``-m "not example_plugin"`` (or ``-k "not example_plugin"``) when iterating
locally; CI runs it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

import mcvae_builtins
import mcvae_framework

pytestmark = pytest.mark.example_plugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: entry-point name -> (example folder, distribution name, kind, tag)
PLUGINS = {
    "translations": ("mcvae-plugin-translations", "mcvae-plugin-translations", "group", "translation2"),
    "laplace-prior": ("mcvae-plugin-laplace-prior", "mcvae-plugin-laplace-prior", "prior", "laplace_mixture"),
    "axis-scaling": ("mcvae-plugin-axis-scaling", "mcvae-plugin-axis-scaling", "group", "axis_scaling"),
    "quarter-turns": ("mcvae-plugin-quarter-turns", "mcvae-plugin-quarter-turns", "group", "c4"),
}

CONFIG = """\
# Small enough to train one epoch in a few seconds: 64 scikit-learn digits, translated by
# the example group, with the example prior.
data:
  type: digits
  limit: 64
  transform: {group: translation2, shift: 0.15, seed: 0, canvas: 12}
group:   {type: translation2, shift: 0.15}
encoder: {type: mlp, hidden: [64]}
decoder: {type: mlp, hidden: [64]}
prior:   {type: laplace_mixture, n_components: 10}
model:   {z_cluster_dim: 4, z_style_dim: 2}
loss:    {mode: unsupervised, n_augment: 2}
training: {epochs: 1, batch_size: 32, device: cpu, seed: 0, out_dir: run}
"""

# A group that is not a similarity and has no rotation, with the built-in prior.
AXIS_CONFIG = """\
data:
  type: digits
  limit: 80
  transform: {group: axis_scaling, max_log_scale: 0.25, seed: 0, canvas: 12}
group:   {type: axis_scaling, max_log_scale: 0.25}
encoder: {type: mlp, hidden: [32]}
decoder: {type: mlp, hidden: [32]}
prior:   {type: gmm, n_components: 4}
model:   {z_cluster_dim: 3, z_style_dim: 2}
loss:    {mode: unsupervised, n_augment: 1}
training: {epochs: 1, batch_size: 32, device: cpu, seed: 0}
"""

BAD_CONFIG = CONFIG.replace("group:   {type: translation2, shift: 0.15}", "group:   {type: translation2, shift: 1.5}").replace(
    "n_components: 10", "n_components: 0"
)


def _site_dirs() -> list[str]:
    """This interpreter's site directories (where the framework and its deps are)."""
    paths = sysconfig.get_paths()
    dirs = [paths["purelib"], paths["platlib"]]
    dirs += [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
    # A checkout that is importable without being installed (PYTHONPATH) is found too;
    # the built-ins' entry points then come from wherever the distribution metadata is.
    dirs += [str(Path(mcvae_framework.__file__).resolve().parents[1]), str(Path(mcvae_builtins.__file__).resolve().parents[1])]
    seen: list[str] = []
    for d in dirs:
        if os.path.isdir(d) and d not in seen:
            seen.append(d)
    return seen


def _can_build_offline() -> bool:
    """Whether the setuptools visible here can build a wheel with nothing downloaded: it
    ships ``bdist_wheel`` itself from 70.1 on and needs the ``wheel`` package before that
    (a fresh Python 3.11 venv has setuptools 65 and no ``wheel``). Otherwise pip builds
    in an isolated environment, fetching setuptools from the package index."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    return release >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _run(args, env, cwd, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit code {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """A fresh virtual environment with both example distributions pip-installed."""
    base = tmp_path_factory.mktemp("example-plugins")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MCVAE_PLUGINS", "MCVAE_DISABLE_PLUGIN_AUTOLOAD")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")

    site_packages = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, base)
    assert site_packages.returncode == 0, _explain(site_packages)
    pth = Path(site_packages.stdout.strip()) / "_mcvae_parent_environment.pth"
    pth.parent.mkdir(parents=True, exist_ok=True)
    # One `import` line: site.py executes it (a comprehension would not see `site` there).
    pth.write_text(f"import site; list(map(site.addsitedir, {_site_dirs()!r}))\n", encoding="utf-8")

    # Install copies, so that building does not write build/ or *.egg-info into the repository.
    sources = []
    for folder, *_ in PLUGINS.values():
        target = base / "src" / folder
        shutil.copytree(EXAMPLES / folder, target, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        sources.append(str(target))
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--quiet"]
    if _can_build_offline():
        # The build backend is already here: build without an isolated env, offline.
        pip += ["--no-build-isolation", "--no-index"]
    installed = _run(pip + sources, env, base)
    assert installed.returncode == 0, "pip install of the examples failed:\n" + _explain(installed)

    work = base / "work"
    work.mkdir()
    return SimpleNamespace(python=str(python), env=env, base=base, work=work, sources=dict(zip(PLUGINS, sources)))


def mcvae(plugin_env, *args, cwd=None) -> subprocess.CompletedProcess:
    """Run the ``mcvae`` command with the temporary environment's interpreter."""
    return _run([plugin_env.python, "-m", "mcvae_framework.cli", *args], plugin_env.env, cwd or plugin_env.work)


def test_plugins_command_lists_the_installed_examples(plugin_env):
    result = mcvae(plugin_env, "plugins", "--json")
    assert result.returncode == 0, _explain(result)
    payload = json.loads(result.stdout)
    by_name = {info["name"]: info for info in payload["plugins"]}
    assert payload["failed"] == {}, payload["failed"]
    for name, (_, distribution, kind, tag) in PLUGINS.items():
        assert name in by_name, f"{name} is not listed: {sorted(by_name)}"
        info = by_name[name]
        assert info["distribution"] == distribution and info["version"] == "0.1.0", info
        assert info["registers"] == {kind: [tag]}, info
        assert info["hooks"] == [f"mcvae_register_{kind}s"], info
    # The built-ins still load beside them, through their own entry points.
    assert "so2" in by_name["builtin-groups"]["registers"]["group"]

    # MCVAE_PLUGINS narrows loading to the named entry points.
    only = _run([plugin_env.python, "-m", "mcvae_framework.cli", "plugins", "--json"],
                {**plugin_env.env, "MCVAE_PLUGINS": "translations"}, plugin_env.work)
    assert only.returncode == 0, _explain(only)
    assert [info["name"] for info in json.loads(only.stdout)["plugins"]] == ["translations"]


def test_config_using_the_examples_validates_and_a_bad_one_is_refused(plugin_env):
    (plugin_env.work / "good.yaml").write_text(CONFIG, encoding="utf-8")
    (plugin_env.work / "bad.yaml").write_text(BAD_CONFIG, encoding="utf-8")
    result = mcvae(plugin_env, "config", "validate", "good.yaml", "bad.yaml")
    assert result.returncode == 2, _explain(result)
    assert "ok  good.yaml" in result.stdout, _explain(result)
    # The example config classes answer with the field path, not a traceback.
    assert "bad.yaml" in result.stderr and "group.shift" in result.stderr, _explain(result)
    assert "prior.n_components" in result.stderr, _explain(result)
    assert "Traceback" not in result.stderr


def test_config_using_the_examples_trains_one_epoch(plugin_env):
    (plugin_env.work / "train.yaml").write_text(CONFIG, encoding="utf-8")
    result = mcvae(plugin_env, "train", "train.yaml", "--out-dir", "run")
    assert result.returncode == 0, _explain(result)
    run = plugin_env.work / "run"
    rows = (run / "metrics.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 2, rows  # header + one epoch
    header, values = rows[0].split(","), rows[1].split(",")
    loss = float(values[header.index("train_loss")])
    assert loss == loss and abs(loss) < float("inf"), f"train_loss is {loss}"
    resolved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert resolved["group"]["type"] == "translation2" and resolved["prior"]["type"] == "laplace_mixture"


def test_each_example_passes_its_own_tests_and_contract_kit(plugin_env):
    report = plugin_env.base / "examples-junit.xml"
    tests = [str(Path(src) / "tests") for src in plugin_env.sources.values()]
    result = _run(
        [plugin_env.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *tests],
        plugin_env.env,
        plugin_env.base,
        timeout=300,
    )
    assert result.returncode == 0, _explain(result)
    passed: dict[str, int] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("failure") is None and case.find("error") is None and case.find("skipped") is None:
            cls = case.get("classname", "").rsplit(".", 1)[-1]
            passed[cls] = passed.get(cls, 0) + 1
    # The contract kits really ran against the installed plugins (not just collected).
    assert passed.get("TestTranslation2", 0) >= 15, passed
    assert passed.get("TestLaplaceMixture", 0) >= 10, passed
    assert passed.get("TestAxisScaling", 0) >= 15, passed


def test_a_group_without_rotation_trains_evaluates_plots_and_predicts(plugin_env):
    (plugin_env.work / "axis.yaml").write_text(AXIS_CONFIG, encoding="utf-8")
    steps = [
        ("train", "axis.yaml", "--out-dir", "axis-run"),
        ("evaluate", "axis-run", "--n-actions", "1"),
        ("plot", "axis-run"),
        ("predict", "axis-run", "--data", "axis.yaml", "--out", "axis-pred.npz"),
    ]
    for step in steps:
        result = mcvae(plugin_env, *step)
        assert result.returncode == 0, f"mcvae {' '.join(step)}\n" + _explain(result)
    run = plugin_env.work / "axis-run"
    text = (run / "report.json").read_text(encoding="utf-8")
    report = json.loads(text)
    pose = report["pose"]
    assert pose["primary_error"] == "axis_log_scale"
    assert set(pose["raw"]) == set(pose["per_cluster_offset"]) == {"axis_log_scale"}
    assert "per_cluster_offset_mod180" not in pose
    # the group names no geomstats space: the hand-written mean served, and the report says so
    assert pose["offset_mean"]["path"] == "intrinsic", pose["offset_mean"]
    assert "rotation" not in text and "rotation" not in (run / "report.md").read_text(encoding="utf-8")
    assert {"latent_map.png", "prototypes.png", "reconstructions.png"} <= {p.name for p in (run / "plots").glob("*.png")}
    import numpy as np

    saved = np.load(plugin_env.work / "axis-pred.npz")
    assert saved["pose_matrix"].shape == (len(saved["cluster"]), 3, 3)
    assert "pose_geomstats" not in saved.files and str(saved["pose_group"]) == "axis_scaling"
    assert np.allclose(saved["pose_matrix"][:, [0, 1], [1, 0]], 0.0)  # axis-aligned: no rotation, no shear

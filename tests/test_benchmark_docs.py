"""The benchmarks are data: every block of docs/benchmarks.md is rendered from a JSON file
under benchmarks/results/ (never read back from the page), every script takes the same
flags, and the quality benchmark's methods are one table."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _report  # noqa: E402
import run_quality  # noqa: E402

#: the scripts that write a block of the page (each named by its result files)
BLOCK_SCRIPTS = sorted({Path(result["script"]).stem for result in _report.results()})


def test_every_block_of_the_page_is_its_result_file_rendered():
    assert _report.regenerate(check=True) == []
    assert len(_report.results()) >= 12 and len(BLOCK_SCRIPTS) >= 9  # the check looked at something


def test_a_changed_figure_is_caught(tmp_path, monkeypatch):
    result = _report.load_result("groups")
    result["rows"][0]["exp_ours_us"] += 1
    (tmp_path / "groups.json").write_text(json.dumps(result))
    monkeypatch.setattr(_report, "RESULTS", tmp_path)
    assert any("'groups'" in problem for problem in _report.regenerate(check=True))


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_no_script_reads_the_page_or_writes_it_but_through_a_result(path):
    if path.name == "_report.py":
        return
    text = path.read_text(encoding="utf-8")
    assert "doc_blocks" not in text and "DOC" not in text, f"{path.name} reads the page"
    assert "write_block(" not in text, f"{path.name} writes a block without its result file: use publish()"


@pytest.mark.parametrize("script", BLOCK_SCRIPTS)
def test_every_block_script_takes_the_shared_flags(script):
    text = (BENCHMARKS / f"{script}.py").read_text(encoding="utf-8")
    assert "benchmark_parser(" in text and "publish(" in text and "def render(" in text, script
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        __import__(script).main(["--help"])
    for flag in ("--out", "--no-doc"):
        assert flag in out.getvalue(), f"{script} lacks {flag}"


def test_publish_with_no_doc_writes_only_out(tmp_path, monkeypatch):
    monkeypatch.setattr(_report, "RESULTS", tmp_path / "results")
    written = []
    monkeypatch.setattr(_report, "write_block", lambda *args: written.append(args))
    args = SimpleNamespace(block="shapes", script="shapes_folder.py", out=None, no_doc=True)
    result = {"shapes": ["ellipse", "cross"], "per_shape": 10,
              "rows": [{"seed": 0, "accuracy": 1.0, "nmi": 1.0, "sizes": [2, 2], "seconds": 3.0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        _report.publish(dict(result), args, ["--seeds", "0"], machine="here")
        assert not (tmp_path / "results").exists() and not written  # --no-doc alone: nothing written
        args.out = str(tmp_path / "mine.json")
        published = _report.publish(dict(result), args, ["--seeds", "0"], machine="here")
    saved = json.loads((tmp_path / "mine.json").read_text())
    assert saved == published and saved["command"] == "python benchmarks/shapes_folder.py --seeds 0"
    assert "| 0 | 1.000 | 1.000 | [2, 2] | 3 |" in _report.render(saved) and not written


@pytest.mark.parametrize("protocol", sorted(run_quality.PROTOCOLS))
@pytest.mark.parametrize("method", sorted(run_quality.METHODS))
def test_every_quality_method_is_one_entry_of_the_table(protocol, method):
    from mcvae_framework import validate_config

    base = run_quality.protocol_config(protocol, epochs=None, quick=True, device="cpu")
    config = run_quality.method_config(base, method, seed=1)
    validate_config(config, source=f"{protocol}/{method}")
    entry = run_quality.METHODS[method]
    assert config["graph"]["enabled"] is entry.guided
    assert bool(config["training"].get("transductive")) is (entry.transductive and bool(base["training"]["transductive"]))
    assert (config["group"] is not None) is entry.group and config["training"]["seed"] == 1

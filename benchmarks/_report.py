"""Shared helper for benchmark scripts: rewrite one marked block of docs/benchmarks.md."""

from __future__ import annotations

import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine_line() -> str:
    """Where and when a benchmark ran, for the heading of its block."""
    cores = torch.get_num_threads()
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{model}, {cores} torch threads{gpu}; torch {torch.__version__}, Python {platform.python_version()}; {when}"


def write_block(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``."""
    text = doc.read_text(encoding="utf-8")
    # the block may be empty (BEGIN and END on consecutive lines): the body is optional
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(?:.*?\n)?(<!-- END {re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        text = text.rstrip() + f"\n\n<!-- BEGIN {name} -->\n<!-- END {name} -->\n"
    text = pattern.sub(lambda m: m.group(1) + markdown.strip() + "\n" + m.group(2), text, count=1)
    doc.write_text(text, encoding="utf-8")

"""What every benchmark script shares: the same flags, the environment line, and the
result files that docs/benchmarks.md is generated from.

A benchmark writes its figures as JSON, ``benchmarks/results/<block>.json``, and the block
``<block>`` of docs/benchmarks.md is rendered from that file alone: the page is never read
back. ``python benchmarks/_report.py`` regenerates every block from the result files;
``python benchmarks/_report.py --check`` exits 1 when a block differs from its file (the
test suite runs it).

A script, in a few lines::

    from _report import benchmark_parser, publish

    def render(result: dict) -> str:       # the block's markdown, from the result alone
        return f"`{result['command']}` -- {result['machine']}.\\n\\n" + ...

    def main(argv=None):
        args = benchmark_parser(__file__, __doc__, block="groups", threads=0).parse_args(argv)
        rows = measure(args)
        publish({"rows": rows}, args, argv)

The names, for scripts that adopt them:

* ``benchmark_parser(script, doc, block, seeds=None, threads=None)``: an argument parser
  with the flags every benchmark takes -- ``--out FILE`` (the JSON result; default
  ``benchmarks/results/<block>.json``), ``--no-doc`` (leave docs/benchmarks.md and
  ``benchmarks/results/`` alone: the result goes only to ``--out`` when given, and is
  printed) -- and, when the script asks for them, ``--seeds 0,1,2`` and ``--threads N``;
* ``seed_list(args)``: ``--seeds`` as integers;
* ``machine_line(note="")``: where and when it ran (CPU, torch threads, GPU, versions, UTC);
* ``command_line(script, argv)``: the command that reproduces the run;
* ``publish(result, args, argv)``: adds ``block``, ``script``, ``command`` and ``machine``
  to ``result``, writes the JSON and the docs block (see ``--out`` and ``--no-doc``),
  prints the block, and returns the result;
* ``load_result(block)``: the committed result of a block (to keep rows of other
  settings, as bench_graph_scale.py does), or ``None``;
* ``render(result)``: the block's markdown, by the ``render`` function of the script that
  wrote it (``result["script"]``);
* ``write_block(block, markdown)`` and ``regenerate(check=False)``: the page itself.

A script that writes several blocks gives each its own ``block`` and dispatches in its
``render`` on ``result["block"]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = HERE / "results"


def machine_line(note: str = "") -> str:
    """Where and when a benchmark ran (``note`` is appended in parentheses, e.g. that the
    machine was shared)."""
    cores = torch.get_num_threads()
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    line = f"{model}, {cores} torch threads{gpu}; torch {torch.__version__}, Python {platform.python_version()}; {when}"
    return f"{line} ({note})" if note else line


def benchmark_parser(script: str, doc: str | None, block: str, *, seeds: str | None = None,
                     threads: int | None = None) -> argparse.ArgumentParser:
    """The argument parser of a benchmark script, with the shared flags (see the module doc).

    :param script: the script's ``__file__``.
    :param doc: its docstring (the first paragraph is the description).
    :param block: the docs block (and result file) it writes.
    :param seeds: the default of ``--seeds`` (``None``: the script takes no seeds).
    :param threads: the default of ``--threads`` (``None``: no such flag; 0: torch's default).
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help=f"JSON result file (default: benchmarks/results/{block}.json, with the docs block)")
    parser.add_argument("--no-doc", action="store_true",
                        help="leave docs/benchmarks.md and benchmarks/results/ alone: print the block, and write "
                             "the result only to --out when given")
    if seeds is not None:
        parser.add_argument("--seeds", default=seeds, help="comma-separated seeds")
    if threads is not None:
        parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads (0: torch's default)")
    parser.set_defaults(block=block, script=Path(script).name)
    return parser


def seed_list(args) -> list[int]:
    """``--seeds`` as integers."""
    try:
        return [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None


def command_line(script: str, argv=None) -> str:
    """``python benchmarks/<script> <arguments>``: what reproduces the run."""
    arguments = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{Path(script).name}", *(shlex.quote(str(a)) for a in arguments)])


def result_path(block: str) -> Path:
    return RESULTS / f"{block}.json"


def load_result(block: str) -> dict | None:
    """The committed result of ``block``, or ``None``."""
    path = result_path(block)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def publish(result: dict, args, argv=None, *, machine: str | None = None) -> dict:
    """Complete ``result`` (``block``, ``script``, ``command``, ``machine``), write it as
    JSON -- to ``--out``, else to ``benchmarks/results/<block>.json`` unless ``--no-doc`` --
    and, unless ``--no-doc``, rewrite the docs block from it; print the block."""
    result = {"block": args.block, "script": args.script,
              "command": result.pop("command", None) or command_line(args.script, argv),
              "machine": machine or machine_line(), **result}
    path = Path(args.out) if args.out else (None if args.no_doc else result_path(args.block))
    text = render(result)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.no_doc:
        write_block(args.block, text)
    print(text)
    if path is not None:
        print(f"wrote {path}" + ("" if args.no_doc else f" and the {args.block} block of docs/benchmarks.md"))
    return result


def render(result: dict) -> str:
    """The markdown of a result's block, by its script's ``render``."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    module = importlib.import_module(Path(result["script"]).stem)
    return module.render(result).strip()


def _block_pattern(name: str) -> re.Pattern:
    # the block may be empty (BEGIN and END on consecutive lines): the body is optional
    return re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(?:.*?\n)?(<!-- END {re.escape(name)} -->)", re.S)


def write_block(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` (a new
    block goes at the end of the page)."""
    text = doc.read_text(encoding="utf-8")
    pattern = _block_pattern(name)
    if not pattern.search(text):
        text = text.rstrip() + f"\n\n<!-- BEGIN {name} -->\n<!-- END {name} -->\n"
    text = pattern.sub(lambda m: m.group(1) + markdown.strip() + "\n" + m.group(2), text, count=1)
    doc.write_text(text, encoding="utf-8")


def doc_blocks(doc: Path = DOC) -> dict[str, str]:
    """Every block of the page and its text (for the check; nothing is parsed out of it)."""
    text = doc.read_text(encoding="utf-8")
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"<!-- BEGIN (\S+) -->\n(.*?)<!-- END \1 -->", text, re.S)}


def results() -> list[dict]:
    """Every committed result file, one per block."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(RESULTS.glob("*.json"))]


def regenerate(check: bool = False) -> list[str]:
    """Render every block from its result file; with ``check``, change nothing and return
    the problems (a block that differs from its file, a block without a file)."""
    problems, blocks = [], doc_blocks()
    rendered = {result["block"]: render(result) for result in results()}
    for name in sorted(set(blocks) - set(rendered)):
        problems.append(f"block {name!r} of docs/benchmarks.md has no result file in benchmarks/results/")
    for name, text in rendered.items():
        if check and blocks.get(name) != text:
            problems.append(f"block {name!r} of docs/benchmarks.md differs from benchmarks/results/{name}.json: "
                            "run `python benchmarks/_report.py`")
        elif not check:
            write_block(name, text)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate every block of docs/benchmarks.md from "
                                                 "benchmarks/results/*.json.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block differs")
    args = parser.parse_args(argv)
    problems = regenerate(check=args.check)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not args.check:
        print(f"rewrote {len(results())} blocks of {DOC.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

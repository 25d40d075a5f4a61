"""The evaluation report as files: ``report.json`` (JSON-safe numbers) and ``report.md``
(the same as markdown tables, which ``mcvae evaluate`` also prints)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..runtime.checkpoint import atomic_write_text
from ..runtime.run_layout import RunLayout


def json_safe(value):
    """JSON-safe: NaN/inf become null, tensors and numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def report_markdown(report: dict) -> str:
    """The report as markdown tables (what ``mcvae evaluate`` prints)."""
    lines = [f"# Evaluation of {report.get('run_dir', 'a model')} ({report.get('split')} split, "
             f"{report.get('n_images')} images)", ""]
    clus = report.get("clustering", {})
    if "accuracy" in report:
        lines += ["## Clustering", "", "| accuracy | NMI | ARI | clusters used |", "| --- | --- | --- | --- |",
                  f"| {_fmt(report['accuracy'])} | {_fmt(report['nmi'])} | {_fmt(report['ari'])} | "
                  f"{clus.get('clusters_used', '-')} of {clus.get('n_clusters', '-')} |", ""]
    if "cluster_sizes" in clus:
        lines += [f"Cluster sizes: {clus['cluster_sizes']}", ""]
    consensus = report.get("consensus") or {}
    if "accuracy" in consensus:
        lines += [f"With the invariant graph (every image's cluster probabilities averaged with those of its "
                  f"{consensus['neighbours']} graph neighbours; {consensus['moved_images']} images change cluster): "
                  f"accuracy {_fmt(consensus['accuracy'])}, NMI {_fmt(consensus['nmi'])}, ARI "
                  f"{_fmt(consensus['ari'])}.", ""]
    collapse = report.get("collapse") or {}
    if collapse.get("empty_components") or collapse.get("reseeded_during_training"):
        lines += [f"**Mixture collapse:** {collapse.get('empty_components', 0)} empty component(s) on this split; "
                  f"{collapse.get('reseeded_during_training', 0)} component(s) re-seeded during training "
                  "(see train.log). Fewer components, graph guidance (`graph.enabled`) or a higher "
                  "`loss.balance_weight` usually help.", ""]
    if "pose" in report:
        lines += ["## Pose error", "",
                  "Errors of exp(tau) against the true pose (group distance); the learned pose is "
                  "defined up to a constant offset per cluster, removed in the last columns.", "",
                  "| unit | raw median | raw mean | offset removed median | offset removed mean |",
                  "| --- | --- | --- | --- | --- |"]
        raw, aligned = report["pose"]["raw"], report["pose"]["per_cluster_offset"]
        for unit in raw:
            lines.append(f"| {unit} | {_fmt(raw[unit]['median'])} | {_fmt(raw[unit]['mean'])} | "
                         f"{_fmt(aligned[unit]['median'])} | {_fmt(aligned[unit]['mean'])} |")
        for unit, folded in report["pose"].get("per_cluster_offset_mod180", {}).items():
            lines.append(f"| {unit}, offset fitted mod 180 | | | {_fmt(folded['median'])} | "
                         f"{_fmt(folded['mean'])} |")
        lines.append("")
        accuracy = report["pose"].get("component_accuracy")
        if accuracy:
            lines += [f"{str(accuracy['name']).capitalize()} accuracy (the discrete part of the pose): "
                      f"{_fmt(accuracy['raw'])} raw, {_fmt(accuracy['per_cluster_offset'])} up to one "
                      f"{accuracy['name']} per cluster.", ""]
        how = report["pose"].get("offset_mean")
        if how:
            lines.append(f"Offsets averaged by: {how.get('method')} ({how.get('path')} path"
                         + (f"; {how['reason']}" if how.get("reason") else "") + ").")
        spread = report["pose"].get("offset_dispersion")
        if spread:
            lines.append(f"Offset dispersion (root mean squared distance of each cluster's offsets from its "
                         f"fitted offset), median over clusters: {_fmt(spread.get('median'))}.")
        if how or spread:
            lines.append("")
    blocks = [("Canonical reconstruction (MSE per pixel)", "canonical"),
              ("Reconstruction (MSE per pixel)", "reconstruction"),
              ("Invariance under random group actions", "invariance"),
              ("ELBO terms (per image)", "elbo")]
    for title, key in blocks:
        if report.get(key):
            lines += [f"## {title}", "", "| quantity | value |", "| --- | --- |"]
            lines += [f"| {name} | {_fmt(value)} |" for name, value in report[key].items()]
            lines.append("")
    return "\n".join(lines).rstrip()


def write_report(report: dict, run_dir) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``run_dir``, each atomically (a temp file,
    then a rename, as checkpoints are): a reader never sees half a report."""
    layout = RunLayout(run_dir)
    clean = json_safe(report)
    json_path, md_path = layout.report_json, layout.report_md
    atomic_write_text(json_path, json.dumps(clean, indent=2) + "\n")
    atomic_write_text(md_path, report_markdown(clean) + "\n")
    return json_path, md_path


__all__ = ["json_safe", "report_markdown", "write_report"]

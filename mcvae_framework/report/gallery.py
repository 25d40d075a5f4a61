"""``report.html``: a self-contained page of a run's clusters, to keep the good ones and
reject the junk (written by ``mcvae report`` and ``mcvae evaluate``).

One card per cluster (its class average, its decoded prototype, its most and least
confident members, a histogram of its members' poses), the confusion matrix when the
data has labels, and the training curves. Each card has *keep* / *reject* buttons; the
page shows the command that writes the kept clusters' particles (``mcvae predict ...
--clusters ...``) and offers the selection as a JSON file (the kept clusters and the ids
of their images).

The page opens offline and fetches nothing: images are inlined as ``data:`` URIs, the
style sheet and script are in the page, and its Content-Security-Policy forbids loading
anything else. Every text that comes from the data (file names, class names, paths) is
escaped; the script writes only through ``textContent`` (see
:mod:`mcvae_framework.report.gallery_assets`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field

import numpy as np

from .gallery_assets import CSS, SCRIPT

#: nothing is loaded from anywhere; images are data: URIs, style and script inline.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def png_bytes(image: np.ndarray, normalise: bool = True) -> bytes:
    """A ``(C, H, W)`` or ``(H, W)`` image as PNG bytes (grayscale or RGB); ``normalise``
    stretches its values to the full range first (class averages are faint otherwise)."""
    from PIL import Image  # matplotlib's own dependency

    image = np.asarray(image, dtype=np.float64)
    image = image[0] if image.ndim == 3 and image.shape[0] == 1 else image
    image = np.moveaxis(image, 0, -1) if image.ndim == 3 else image
    if normalise:
        low, high = np.nanmin(image), np.nanmax(image)
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    pixels = (np.nan_to_num(image).clip(0, 1) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Member:
    """One image shown on a card: its id (file name or index), PNG and probability."""

    id: str
    png: bytes
    probability: float


@dataclass
class Card:
    """What one cluster's card shows (see the module docstring)."""

    cluster: int
    size: int
    facts: list[str]
    average_png: bytes | None
    prototype_png: bytes | None
    confident: list[Member]
    doubtful: list[Member]
    pose_counts: np.ndarray
    pose_edges: np.ndarray
    pose_name: str
    label_text: str | None = None
    member_ids: list[str] = field(default_factory=list)


def histogram_svg(counts: np.ndarray, edges: np.ndarray, name: str, width: int = 280, height: int = 70) -> str:
    """A bar chart of ``counts`` over ``edges`` as inline SVG (numbers only, and the escaped
    axis name)."""
    counts = np.asarray(counts, dtype=np.float64)
    top = counts.max() if counts.size and counts.max() > 0 else 1.0
    bar = width / max(1, len(counts))
    plot = height - 14
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{plot - plot * c / top:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{plot * c / top:.1f}" fill="#5b7bd5"/>' for i, c in enumerate(counts))
    low, high = (float(edges[0]), float(edges[-1])) if len(edges) else (0.0, 0.0)
    axis = (f'<text x="0" y="{height - 2}" font-size="9">{low:.0f}</text>'
            f'<text x="{width / 2:.0f}" y="{height - 2}" font-size="9" text-anchor="middle">{html.escape(name)}</text>'
            f'<text x="{width}" y="{height - 2}" font-size="9" text-anchor="end">{high:.0f}</text>')
    return (f'<svg class="pose-histogram" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img">{bars}{axis}</svg>')


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return '<div class="missing">-</div>'
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt, quote=True)}">'


def _members_html(members: list[Member]) -> str:
    tiles = "".join(f'<figure title="{html.escape(m.id, quote=True)}">{_img(m.png, m.id)}'
                    f"<figcaption>{html.escape(m.id)}<br>{m.probability:.2f}</figcaption></figure>"
                    for m in members)
    return f'<div class="members">{tiles}</div>'


def card_html(card: Card) -> str:
    facts = " · ".join(html.escape(f) for f in card.facts)
    label = f'<div class="label">{html.escape(card.label_text)}</div>' if card.label_text else ""
    return f"""<section class="card" data-cluster="{card.cluster}">
<h3>cluster {card.cluster}</h3>
<div class="facts">{facts}</div>
<div class="pair">
<figure>{_img(card.average_png, f"class average of cluster {card.cluster}")}
<figcaption>class average</figcaption></figure>
<figure>{_img(card.prototype_png, f"prototype of cluster {card.cluster}")}
<figcaption>decoded prototype</figcaption></figure>
</div>
{label}
<div class="label">most confident</div>
{_members_html(card.confident)}
<div class="label">least confident</div>
{_members_html(card.doubtful)}
<div class="label">poses of its members</div>
{histogram_svg(card.pose_counts, card.pose_edges, card.pose_name)}
<div class="choice"><button type="button" class="keep active">keep</button>
<button type="button" class="reject">reject</button></div>
</section>"""


def confusion_html(table: np.ndarray, label_names: list[str], clusters: list[int], matched: dict[int, int]) -> str:
    """The label x cluster counts as an HTML table; each cluster's matched label (Hungarian)
    is highlighted."""
    head = "".join(f"<th>{c}</th>" for c in clusters)
    rows = []
    for i, name in enumerate(label_names):
        cells = "".join(f'<td class="{"matched" if matched.get(c) == i else ""}">{int(table[i, j])}</td>'
                        for j, c in enumerate(clusters))
        rows.append(f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>")
    return (f'<table class="confusion"><tr><th>label \\ cluster</th>{head}</tr>{"".join(rows)}</table>')


def _json_for_script(value) -> str:
    """JSON that cannot end its ``<script>`` block nor open markup inside it."""
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def gallery_html(*, title: str, run: str, split: str, cards: list[Card], command_prefix: str,
                 command_suffix: str, id_kind: str, summary: list[str], confusion: str | None = None,
                 curves_png: bytes | None = None) -> str:
    """The whole page (see the module docstring).

    :param command_prefix: the command line up to the kept clusters' list (``... --clusters ``).
    :param command_suffix: the rest of it (`` --out ...``).
    :param id_kind: what the ids are: ``name`` (file names) or ``index`` (positions in the source).
    :param summary: lines shown under the title (escaped here).
    :param confusion: the confusion table's HTML (:func:`confusion_html`), when labels exist.
    """
    data = {"run": run, "split": split, "id_kind": id_kind, "command_prefix": command_prefix,
            "command_suffix": command_suffix,
            "clusters": [{"cluster": c.cluster, "size": c.size, "ids": c.member_ids} for c in cards]}
    lines = "".join(f"<div class=\"meta\">{html.escape(line)}</div>" for line in summary)
    confusion_block = f"<h2>Confusion matrix</h2>{confusion}" if confusion else ""
    curves = (f'<h2>Training curves</h2><div class="curves">{_img(curves_png, "training curves")}</div>'
              if curves_png else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{lines}
<h2>Clusters</h2>
<p class="meta">Mark each cluster <b>keep</b> or <b>reject</b>; the selection below follows. Clusters are
numbered from 0, as in every output of mcvae (a STAR file's rlnClassNumber is the cluster + 1).</p>
<div class="gallery" id="gallery">
{"".join(card_html(c) for c in cards)}
</div>
<h2>Selection</h2>
<p id="selection-count" class="meta"></p>
<p class="meta">Command that writes the kept clusters' images (with their classes, angles and shifts):</p>
<pre id="command"></pre>
<p><a id="download-selection" download="selection.json" href="#">Download the selection (JSON: kept clusters and
the ids of their images)</a></p>
{confusion_block}
{curves}
<script type="application/json" id="gallery-data">{_json_for_script(data)}</script>
<script>{SCRIPT}</script>
</body></html>
"""


__all__ = ["Card", "Member", "card_html", "confusion_html", "data_uri", "gallery_html", "histogram_svg", "png_bytes"]

"""The style sheet and the script of ``report.html`` (:mod:`mcvae_framework.report.gallery`).

The script reads the page's data from a ``<script type="application/json">`` block and
writes only through ``textContent`` and attributes it sets itself (never ``innerHTML``), so
no name of a file or a class, whatever it holds, can become markup or code. The page's
Content-Security-Policy lets it load nothing from anywhere: images are ``data:`` URIs.
"""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #555; font-size: 0.9em; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 2px solid #8bc48a; border-radius: 8px; padding: 8px 10px; width: 300px; }
.card.rejected { border-color: #d9534f; opacity: 0.55; }
.card h3 { margin: 0 0 4px 0; font-size: 1em; }
.card .facts { font-size: 0.8em; color: #444; margin-bottom: 6px; }
.pair { display: flex; gap: 8px; }
.pair figure { margin: 0; text-align: center; font-size: 0.7em; color: #555; }
.pair img { width: 120px; height: 120px; }
img { image-rendering: pixelated; background: #000; }
.members { display: flex; flex-wrap: wrap; gap: 3px; margin: 2px 0 6px 0; }
.members figure { margin: 0; text-align: center; font-size: 0.6em; color: #555; max-width: 46px; overflow: hidden; }
.members img { width: 44px; height: 44px; display: block; }
.label { font-size: 0.75em; font-weight: 600; margin-top: 4px; }
.choice button { font-size: 0.85em; padding: 2px 10px; margin-right: 4px; cursor: pointer; }
.choice button.active { font-weight: 700; }
.keep.active { background: #8bc48a; }
.reject.active { background: #d9534f; color: #fff; }
table.confusion { border-collapse: collapse; font-size: 0.8em; }
table.confusion td, table.confusion th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.confusion td.matched { background: #d8ecd7; font-weight: 600; }
pre { background: #fff; border: 1px solid #ddd; padding: 8px; white-space: pre-wrap; word-break: break-all; }
.curves img { max-width: 100%; background: #fff; image-rendering: auto; }
"""

SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var state = {};
  data.clusters.forEach(function (c) { state[c.cluster] = "keep"; });

  function kept() {
    return data.clusters.filter(function (c) { return state[c.cluster] === "keep"; });
  }

  function selection() {
    var keep = kept();
    var ids = [];
    keep.forEach(function (c) { ids = ids.concat(c.ids); });
    var clusters = keep.map(function (c) { return c.cluster; });
    return {
      run: data.run, split: data.split, id_kind: data.id_kind,
      kept_clusters: clusters,
      rejected_clusters: data.clusters.filter(function (c) { return state[c.cluster] !== "keep"; })
        .map(function (c) { return c.cluster; }),
      n_items: ids.length, items: ids,
      command: data.command_prefix + clusters.join(",") + data.command_suffix
    };
  }

  function refresh() {
    var sel = selection();
    document.getElementById("command").textContent = sel.command;
    document.getElementById("selection-count").textContent =
      sel.kept_clusters.length + " of " + data.clusters.length + " clusters kept, " + sel.n_items + " images";
    var link = document.getElementById("download-selection");
    link.setAttribute("href", "data:application/json;charset=utf-8," +
                      encodeURIComponent(JSON.stringify(sel, null, 1)));
    document.querySelectorAll(".card").forEach(function (card) {
      var mark = state[card.getAttribute("data-cluster")];
      card.classList.toggle("rejected", mark !== "keep");
      card.querySelector("button.keep").classList.toggle("active", mark === "keep");
      card.querySelector("button.reject").classList.toggle("active", mark !== "keep");
    });
  }

  document.querySelectorAll(".card").forEach(function (card) {
    var cluster = card.getAttribute("data-cluster");
    card.querySelector("button.keep").addEventListener("click", function () { state[cluster] = "keep"; refresh(); });
    card.querySelector("button.reject").addEventListener("click", function () { state[cluster] = "reject"; refresh(); });
  });
  refresh();
})();
"""

__all__ = ["CSS", "SCRIPT"]

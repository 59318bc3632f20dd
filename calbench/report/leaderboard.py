"""``calbench leaderboard``: one CI-aware table per task from every run under a results folder.

Which rows are ranked, on what number and in which order is :mod:`calbench.report.ranking` (the rule is
also stated on the page and in the README): by default the Brier score over all n records, an
unparsed confidence counted as 0.5; rows that cannot be compared (run not complete, parse rate
below 50%, accuracy at the floor, other questions) are listed unranked with the reason. The
other metric columns are the ``drop`` view from ``metrics.json``.

Outputs (``--out``, default ``leaderboard/``): ``leaderboard.md``, ``leaderboard.csv``,
``leaderboard.json`` (list of rows), ``index.html`` (static: no server, no CDN; inline CSS/JS;
sortable columns, task filter, each row's reliability diagram one click away) and
``diagrams/<slug>.svg``. Every file name written is made here (slugs are ``[a-z0-9-]`` plus a
hash), never taken from a run's names, so nothing is written outside ``--out``. Every run's
records are read and checked before the first file is written.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import os
import re
import sys
from pathlib import Path
from typing import Any

from calbench import __version__
from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json, atomic_write_text
from calbench.core.runs import Run, load_runs, parse_rate
from calbench.report.ranking import (
    COLUMNS,
    DEFAULT_RANK_BY,
    HEADERS,
    HIGHER_IS_BETTER,
    RANK_POLICY,
    rank_label,
    rank_note,
    rank_rows,
    ranking,
    run_reasons,
    tie_note,
)

DIAGRAMS = "diagrams"


# ---------------------------------------------------------------------------- rows and ranking


def run_source(run: Run) -> dict[str, Any]:
    """Where a run's records come from: the manifest's ``source`` (``calbench import`` writes
    ``{"kind": "imported", "format", "from": {"file", "sha256"}, "grader"}``), else
    ``{"kind": "generated"}``."""
    src = run.manifest.get("source")
    if isinstance(src, dict) and src.get("kind"):
        return {k: src.get(k) for k in ("kind", "format", "from", "grader")}
    return {"kind": "generated"}


def _imported_md(row: dict[str, Any]) -> str:
    src = row.get("source") or {}
    if src.get("kind") != "imported":
        return ""
    return f" _(imported; graded by {md_escape(src.get('grader') or 'its source')})_"


def _imported_html(row: dict[str, Any]) -> str:
    src = row.get("source") or {}
    if src.get("kind") != "imported":
        return ""
    frm = src.get("from") if isinstance(src.get("from"), dict) else {}
    title = (f"imported from {frm.get('file', '?')} (sha256 {str(frm.get('sha256', '?'))[:12]}); "
             f"graded by {src.get('grader') or 'its source'}")
    return f' <span class="badge" title="{_e(title)}">imported</span>'


def _slug(run: Run, rel_path: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", f"{run.task}-{run.model}-{run.elicitation}".lower())
    base = base.strip("-")[:80] or "run"
    # The hash keeps slugs unique when names differ only in characters the slug drops.
    digest = hashlib.sha256(
        "\0".join([run.task, run.model, run.elicitation, rel_path]).encode()
    ).hexdigest()[:8]
    return f"{base}-{digest}"


def build_rows(runs: list[Run], *, base: Path | None = None,
               metric: str = DEFAULT_RANK_BY) -> list[dict[str, Any]]:
    """One row per run: identifiers, n, ``status``, every column as ``{"value", "lo", "hi"}``
    (the drop view), ``ranking`` (:func:`calbench.report.ranking.ranking` of ``metric``), and for
    :func:`rank_rows` ``_reasons`` (:func:`calbench.report.ranking.run_reasons`), ``_ids`` and
    ``_records`` (the paired "=" test)."""
    if metric not in HIGHER_IS_BETTER:
        raise UsageError(f"cannot rank by {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    rows = []
    for run in runs:
        rel = os.path.relpath(run.path, base) if base else str(run.path)
        row: dict[str, Any] = {
            "task": run.task,
            "model": run.model,
            "elicitation": run.elicitation,
            "n": run.n,
            "rank": None,
            "rank_shared": False,
            "unranked_reason": None,
            "status": run.status,
            "ranking": ranking(run, metric),
        }
        for key, _, _ in COLUMNS:
            row[key] = parse_rate(run) if key == "parse_rate" else run.metric(key)
        row["n_scored"] = run.summary.get("n_scored")
        row["policy"] = run.summary.get("policy")
        row["source"] = run_source(run)
        row["run"] = Path(rel).as_posix()
        row["slug"] = _slug(run, row["run"])
        row["diagram"] = None
        row["_reasons"] = run_reasons(run)
        row["_ids"] = run.question_ids()
        row["_records"] = run.records  # read once by Run; the paired "=" test pairs them
        rows.append(row)
    return rows


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def fmt_cell(m: dict[str, float | None], digits: int = 3) -> str:
    if m.get("value") is None:
        return "—"
    s = _num(m["value"], digits)
    if m.get("lo") is not None and m.get("hi") is not None:
        s += f" [{_num(m['lo'], digits)}, {_num(m['hi'], digits)}]"
    return s


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~$])")


def md_escape(text: Any) -> str:
    """Text from a run made inert in a Markdown table: HTML escaped (GitHub renders inline
    HTML), Markdown punctuation backslash-escaped, newlines flattened."""
    s = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def csv_safe(text: Any) -> str:
    """Spreadsheet apps run cells that start with = + - @ as formulas (CSV injection); a leading
    apostrophe keeps such a model name as text."""
    s = str(text)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def _ranked_header(metric: str) -> str:
    return f"{HEADERS[metric]}, ranked ({RANK_POLICY})"


def to_markdown(rows: list[dict[str, Any]], metric: str) -> str:
    lines = ["# calbench leaderboard", "", rank_note(metric), ""]
    if any((r.get("source") or {}).get("kind") == "imported" for r in rows):
        lines += ["_(imported)_: outputs that others released, read by `calbench import`; the "
                  "run's manifest names the file (SHA-256) and the grader.", ""]
    tasks = sorted({r["task"] for r in rows})
    for task in tasks:
        lines += [f"## {md_escape(task)}", ""]
        header = (["rank", "model", "elicitation", "n", _ranked_header(metric)]
                  + [HEADERS[k] for k, _, _ in COLUMNS] + ["not ranked because"])
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---:", ":---", ":---", "---:", "---:"]
                                    + ["---:"] * len(COLUMNS) + [":---"]) + "|")
        for r in (r for r in rows if r["task"] == task):
            # The label carries the manifest's status: text from a run, escaped like the names.
            cells = [md_escape(rank_label(r)), md_escape(r["model"]) + _imported_md(r),
                     md_escape(r["elicitation"]),
                     str(r["n"]), fmt_cell(r["ranking"])]
            cells += [fmt_cell(r[k]) for k, _, _ in COLUMNS]
            cells.append(md_escape(r["unranked_reason"] or ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["task", "rank", "rank_shared", "model", "elicitation", "n", "status",
              "ranking_metric", "ranking_policy", "ranking_n", "ranking", "ranking_lo",
              "ranking_hi"]
    for k, _, _ in COLUMNS:
        header += [k, f"{k}_lo", f"{k}_hi"]
    header += ["unranked_reason", "run"]
    w.writerow(header)
    for r in rows:
        rk = r["ranking"]
        line = [csv_safe(r["task"]), "" if r["rank"] is None else r["rank"],
                str(r["rank_shared"]).lower(), csv_safe(r["model"]), csv_safe(r["elicitation"]),
                r["n"], csv_safe(r.get("status") or ""), rk["metric"], rk["policy"], rk["n"],
                _num(rk["value"], 6), _num(rk["lo"], 6), _num(rk["hi"], 6)]
        for k, _, _ in COLUMNS:
            line += [_num(r[k]["value"], 6), _num(r[k]["lo"], 6), _num(r[k]["hi"], 6)]
        line += [csv_safe(r["unranked_reason"] or ""), csv_safe(r["run"])]
        w.writerow(line)
    return buf.getvalue()


def to_json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # slug and the private ranking inputs (_reasons, _ids, _records) are not published.
    return [{k: v for k, v in r.items() if k != "slug" and not k.startswith("_")} for r in rows]


# ---------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d8dee4; --head:#f3f5f7; --accent:#0b62c4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px; max-width: 1500px; }
h1 { font-size: 22px; margin: 0 0 6px; }
p.note { color: var(--muted); margin: 4px 0 16px; max-width: 900px; }
.controls { display: flex; gap: 16px; align-items: center; margin: 12px 0; flex-wrap: wrap; }
.controls label { color: var(--muted); }
select, input { font: inherit; padding: 3px 6px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right;
         vertical-align: top; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; }
th button { font: inherit; font-weight: 600; background: none; border: 0; cursor: pointer;
            padding: 0; color: var(--fg); }
th[aria-sort="ascending"] button::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"] button::after { content: " \\25BC"; font-size: 10px; }
td.text, th.text { text-align: left; }
td.model { white-space: normal; max-width: 320px; overflow-wrap: anywhere; }
.badge { font-size: 11px; color: #6a4a00; background: #fff3d6; border: 1px solid #e6cf95;
         border-radius: 4px; padding: 0 4px; white-space: nowrap; }
td.reason { white-space: normal; min-width: 220px; max-width: 360px; color: var(--muted); }
td .ci { display: block; color: var(--muted); font-size: 11px; }
td.rank.shared { color: var(--muted); }
td.primary, th.primary { background: #eef5ff; }
tr:hover td { background: #fafbfc; }
a { color: var(--accent); }
dialog { border: 1px solid var(--line); border-radius: 8px; padding: 12px; max-width: 95vw;
         max-height: 95vh; }
dialog::backdrop { background: rgba(0,0,0,.45); }
dialog img { display: block; width: min(88vw, 620px); height: auto; max-height: 82vh;
             object-fit: contain; background: white; }
dialog header { display: flex; justify-content: space-between; gap: 16px; margin-bottom: 8px; }
footer { color: var(--muted); margin-top: 16px; font-size: 12px; }
"""

# Sorting: numbers by data-v (undefined last whichever the direction), text by locale order.
# Filtering: rows carry data-task. The diagram link works without JS (opens the SVG); with JS
# it opens in a <dialog> instead.
_JS = """
(function () {
  const table = document.getElementById('board');
  const tbody = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach(function (th, col) {
    const btn = th.querySelector('button');
    if (!btn) return;
    btn.addEventListener('click', function () {
      const asc = th.getAttribute('aria-sort') !== 'ascending';
      headers.forEach(function (h) { h.setAttribute('aria-sort', 'none'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      const numeric = th.dataset.type === 'num';
      const rows = Array.from(tbody.rows);
      rows.sort(function (a, b) {
        const x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (numeric) {
          const xe = x === undefined || x === '', ye = y === undefined || y === '';
          if (xe || ye) return xe === ye ? 0 : (xe ? 1 : -1);
          return asc ? Number(x) - Number(y) : Number(y) - Number(x);
        }
        const c = String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { tbody.appendChild(r); });
    });
  });
  const filter = document.getElementById('task-filter');
  const count = document.getElementById('row-count');
  function applyFilter() {
    let shown = 0;
    Array.from(tbody.rows).forEach(function (r) {
      const show = !filter.value || r.dataset.task === filter.value;
      r.hidden = !show;
      if (show) shown += 1;
    });
    count.textContent = shown + ' of ' + tbody.rows.length + ' rows';
  }
  filter.addEventListener('change', applyFilter);
  applyFilter();
  const dialog = document.getElementById('diagram');
  const img = dialog.querySelector('img');
  const title = dialog.querySelector('.title');
  tbody.addEventListener('click', function (ev) {
    const a = ev.target.closest('a.diagram-link');
    if (!a || typeof dialog.showModal !== 'function') return;
    ev.preventDefault();
    img.src = a.getAttribute('href');
    img.alt = 'reliability diagram: ' + a.dataset.title;
    title.textContent = a.dataset.title;
    dialog.showModal();
  });
  dialog.querySelector('button.close').addEventListener('click', function () { dialog.close(); });
  dialog.addEventListener('click', function (ev) { if (ev.target === dialog) dialog.close(); });
})();
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def to_html(rows: list[dict[str, Any]], metric: str) -> str:
    tasks = sorted({r["task"] for r in rows})
    head = [
        ("rank", "rank", "num", "rank"),
        ("task", "task", "text", "text"),
        ("model", "model", "text", "text"),
        ("elicitation", "elicitation", "text", "text"),
        ("n", "n", "num", ""),
        ("ranked", _ranked_header(metric), "num", "primary"),
    ] + [(k, HEADERS[k], "num", "") for k, _, _ in COLUMNS] + [
        ("unranked_reason", "not ranked because", "text", "text")]
    ths = []
    for key, label, typ, cls in head:
        title = ""
        better = HIGHER_IS_BETTER.get(metric if key == "ranked" else key)
        if better is not None:
            title = f' title="{"higher" if better else "lower"} is better"'
        ths.append(
            f'<th class="{cls}" data-key="{key}" data-type="{typ}" aria-sort="none"{title}>'
            f'<button type="button">{_e(label)}</button></th>'
        )
    ths.append('<th class="text">diagram</th>')
    trs = []
    for r in rows:
        rank_v = "" if r["rank"] is None else str(r["rank"])
        shared = " shared" if r["rank_shared"] else ""
        rank_title = f' title="{_e(tie_note(r))}"' if shared else ""
        if r["unranked_reason"]:
            rank_title = f' title="not ranked: {_e(r["unranked_reason"])}"'
        cells = [
            f'<td class="rank{shared}" data-v="{rank_v}"{rank_title}>{_e(rank_label(r))}</td>',
            f'<td class="text" data-v="{_e(r["task"])}">{_e(r["task"])}</td>',
            f'<td class="text model" data-v="{_e(r["model"])}">{_e(r["model"])}'
            f'{_imported_html(r)}</td>',
            f'<td class="text" data-v="{_e(r["elicitation"])}">{_e(r["elicitation"])}</td>',
            f'<td data-v="{r["n"]}">{r["n"]}</td>',
        ]
        for k in ["ranking"] + [k for k, _, _ in COLUMNS]:
            m = r[k]
            cls = ' class="primary"' if k == "ranking" else ""
            if m["value"] is None:
                cells.append(f'<td{cls} data-v="">—</td>')
                continue
            ci = ""
            if m["lo"] is not None and m["hi"] is not None:
                ci = f'<span class="ci">[{_num(m["lo"])}, {_num(m["hi"])}]</span>'
            cells.append(f'<td{cls} data-v="{m["value"]!r}">{_num(m["value"])}{ci}</td>')
        reason = r["unranked_reason"] or ""
        cells.append(f'<td class="text reason" data-v="{_e(reason)}">{_e(reason)}</td>')
        label = f'{r["model"]} · {r["task"]} · {r["elicitation"]}'
        if r.get("diagram"):
            cells.append(
                f'<td class="text"><a class="diagram-link" href="{_e(r["diagram"])}" '
                f'data-title="{_e(label)}">reliability</a></td>'
            )
        else:
            cells.append('<td class="text">—</td>')
        trs.append(f'<tr data-task="{_e(r["task"])}">' + "".join(cells) + "</tr>")
    options = ['<option value="">all tasks</option>'] + [
        f'<option value="{_e(t)}">{_e(t)}</option>' for t in tasks
    ]
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>calbench leaderboard</title>
<style>{_CSS}</style>
</head>
<body>
<h1>calbench leaderboard</h1>
<p class="note">{_e(rank_note(metric))} Click a column header to sort; click
<em>reliability</em> for a row's reliability diagram.</p>
<div class="controls">
<label>Task <select id="task-filter">{"".join(options)}</select></label>
<span id="row-count"></span>
</div>
<div class="table-wrap">
<table id="board">
<thead><tr>{"".join(ths)}</tr></thead>
<tbody>
{chr(10).join(trs)}
</tbody>
</table>
</div>
<dialog id="diagram" aria-label="reliability diagram">
<header><strong class="title"></strong><button type="button" class="close">close</button></header>
<img alt="">
</dialog>
<footer>Generated by calbench {_e(__version__)} from {len(rows)} runs.
Also as <a href="leaderboard.csv">CSV</a>, <a href="leaderboard.json">JSON</a>,
<a href="leaderboard.md">Markdown</a>.</footer>
<script>{_JS}</script>
</body>
</html>
"""


# ---------------------------------------------------------------------------- build


def build(
    results_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    rank_by: str = DEFAULT_RANK_BY,
    diagrams: bool = True,
    recompute: bool = False,
    recalibrate: list[str] | None = None,
    recal_folds: int | None = None,
    recal_seed: int = 0,
) -> list[dict[str, Any]]:
    """Write the leaderboard of every run under ``results_dir`` into ``out_dir``; return rows.
    With ``recalibrate`` (methods), each run with records also gets derived, unranked rows
    ``<model> +<method>`` (:func:`calbench.report.recalibrated.recalibrated_runs`)."""
    if rank_by not in HIGHER_IS_BETTER:
        raise UsageError(f"--rank-by {rank_by}: choose one of {', '.join(HIGHER_IS_BETTER)}")
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = load_runs([results_dir], recompute=recompute)
    if recalibrate:
        # lazy: recalibrated (numpy, scipy, calbench.metrics) +0.7 s at import (python -X
        # importtime), for --recalibrate only
        from calbench.report.recalibrated import recalibrated_runs

        runs += recalibrated_runs(runs, recalibrate, recal_folds, recal_seed)
    rows = rank_rows(build_rows(runs, base=results_dir.parent, metric=rank_by), rank_by)
    seen: dict[tuple, str] = {}
    for r in rows:
        key = (r["task"], r["model"], r["elicitation"])
        if key in seen:
            print(f"calbench leaderboard: note: {r['run']} and {seen[key]} are both "
                  f"{' / '.join(key)}; both are listed", file=sys.stderr)
        seen.setdefault(key, r["run"])
    out_dir.mkdir(parents=True, exist_ok=True)
    diag_dir = out_dir / DIAGRAMS
    if diagrams:
        # lazy: plots with matplotlib +0.7-1.4 s at import (python -X importtime), which
        # --no-diagrams never uses
        from calbench.report.plots import reliability_figure, save_figure

        # a recalibrated row shares its run's folder: the model name tells them apart
        by_run = {(str(Path(os.path.relpath(run.path, results_dir.parent)).as_posix()),
                   run.model): run for run in runs}
        diag_dir.mkdir(exist_ok=True)
        wanted = set()
        for r in rows:
            name = f"{r['slug']}.svg"
            save_figure(reliability_figure([by_run[(r["run"], r["model"])]]), diag_dir / name)
            r["diagram"] = f"{DIAGRAMS}/{name}"
            wanted.add(name)
        # Diagrams of runs no longer in the results would otherwise linger in a committed folder.
        for stale in diag_dir.glob("*.svg"):
            if stale.name not in wanted:
                stale.unlink()
    atomic_write_text(out_dir / "leaderboard.md", to_markdown(rows, rank_by))
    atomic_write_text(out_dir / "leaderboard.csv", to_csv(rows))
    atomic_write_json(out_dir / "leaderboard.json", to_json_rows(rows))
    atomic_write_text(out_dir / "index.html", to_html(rows, rank_by))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR",
                        help="folder searched recursively for run folders")
    parser.add_argument("--out", default="leaderboard", metavar="DIR",
                        help="output folder (default: leaderboard/)")
    parser.add_argument("--rank-by", default=DEFAULT_RANK_BY, choices=list(HIGHER_IS_BETTER),
                        help="primary metric for the ranking (default: brier)")
    parser.add_argument("--no-diagrams", action="store_true",
                        help="skip drawing the per-row reliability diagrams (faster)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute metrics from samples.jsonl instead of reading metrics.json")
    parser.add_argument("--recalibrate", default=None, metavar="METHOD[,METHOD]",
                        help="add unranked rows '<model> +METHOD' scoring each run's confidences "
                             "after cross-fitted recalibration (temperature, platt, isotonic, "
                             "histogram)")
    parser.add_argument("--recal-folds", type=int, default=None, metavar="K",
                        help="cross-fitting folds for --recalibrate (default 5)")
    parser.add_argument("--recal-seed", type=int, default=None, metavar="S",
                        help="seed of the cross-fitting folds (default 0)")


def run(args: argparse.Namespace) -> int:
    if not Path(args.results_dir).is_dir():
        raise UsageError(f"{args.results_dir}: not a folder")
    rows = build(args.results_dir, args.out, rank_by=args.rank_by,
                 diagrams=not args.no_diagrams, recompute=args.recompute, **_recal_args(args))
    tasks = len({r["task"] for r in rows})
    print(f"wrote {args.out}/index.html, leaderboard.md/.csv/.json: "
          f"{len(rows)} rows, {tasks} task{'s' if tasks != 1 else ''}")
    return 0


def _recal_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.recalibrate is None and args.recal_folds is None and args.recal_seed is None:
        return {}  # the recalibration module (and scipy.optimize) only when asked for
    from calbench.report.recalibrated import cli_options  # lazy: as in build

    return cli_options(args.recalibrate, args.recal_folds, args.recal_seed)

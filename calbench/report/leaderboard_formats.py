"""The leaderboard's rows as files: ``leaderboard.md``, ``leaderboard.csv``, the rows of
``leaderboard.json`` and the static ``index.html`` (inline CSS/JS, no server or CDN). Every text
that comes from a run (task, model, elicitation, reasons) is escaped for the format it lands in:
HTML-escaped, Markdown punctuation backslash-escaped, CSV cells kept from running as formulas.
"""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

from calbench import __version__
from calbench.report.ranking import (
    COLUMNS,
    HEADERS,
    HIGHER_IS_BETTER,
    RANK_POLICY,
    rank_label,
    rank_note,
    tie_note,
)


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
    title = (
        f"imported from {frm.get('file', '?')} (sha256 {str(frm.get('sha256', '?'))[:12]}); "
        f"graded by {src.get('grader') or 'its source'}"
    )
    return f' <span class="badge" title="{_e(title)}">imported</span>'


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
        lines += [
            "_(imported)_: outputs that others released, read by `calbench import`; the "
            "run's manifest names the file (SHA-256) and the grader.",
            "",
        ]
    tasks = sorted({r["task"] for r in rows})
    for task in tasks:
        lines += [f"## {md_escape(task)}", ""]
        header = (
            ["rank", "model", "elicitation", "n", _ranked_header(metric)]
            + [HEADERS[k] for k, _, _ in COLUMNS]
            + ["not ranked because"]
        )
        lines.append("| " + " | ".join(header) + " |")
        lines.append(
            "|"
            + "|".join(
                ["---:", ":---", ":---", "---:", "---:"] + ["---:"] * len(COLUMNS) + [":---"]
            )
            + "|"
        )
        for r in (r for r in rows if r["task"] == task):
            # The label carries the manifest's status: text from a run, escaped like the names.
            cells = [
                md_escape(rank_label(r)),
                md_escape(r["model"]) + _imported_md(r),
                md_escape(r["elicitation"]),
                str(r["n"]),
                fmt_cell(r["ranking"]),
            ]
            cells += [fmt_cell(r[k]) for k, _, _ in COLUMNS]
            cells.append(md_escape(r["unranked_reason"] or ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = [
        "task",
        "rank",
        "rank_shared",
        "model",
        "elicitation",
        "n",
        "status",
        "ranking_metric",
        "ranking_policy",
        "ranking_n",
        "ranking",
        "ranking_lo",
        "ranking_hi",
    ]
    for k, _, _ in COLUMNS:
        header += [k, f"{k}_lo", f"{k}_hi"]
    header += ["unranked_reason", "run"]
    w.writerow(header)
    for r in rows:
        rk = r["ranking"]
        line = [
            csv_safe(r["task"]),
            "" if r["rank"] is None else r["rank"],
            str(r["rank_shared"]).lower(),
            csv_safe(r["model"]),
            csv_safe(r["elicitation"]),
            r["n"],
            csv_safe(r.get("status") or ""),
            rk["metric"],
            rk["policy"],
            rk["n"],
            _num(rk["value"], 6),
            _num(rk["lo"], 6),
            _num(rk["hi"], 6),
        ]
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


def to_html(rows: list[dict[str, Any]], metric: str, after_table: str = "") -> str:
    """The sortable page; ``after_table``: HTML placed below the table (e.g. the seeds')."""
    tasks = sorted({r["task"] for r in rows})
    head = (
        [
            ("rank", "rank", "num", "rank"),
            ("task", "task", "text", "text"),
            ("model", "model", "text", "text"),
            ("elicitation", "elicitation", "text", "text"),
            ("n", "n", "num", ""),
            ("ranked", _ranked_header(metric), "num", "primary"),
        ]
        + [(k, HEADERS[k], "num", "") for k, _, _ in COLUMNS]
        + [("unranked_reason", "not ranked because", "text", "text")]
    )
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
            f"{_imported_html(r)}</td>",
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
        label = f"{r['model']} · {r['task']} · {r['elicitation']}"
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
{after_table}
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

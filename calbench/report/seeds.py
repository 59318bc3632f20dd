"""One recipe trained with several seeds, side by side: the mean ± sd over seeds of each headline
metric next to every seed's value and 95% CI (the leaderboard's "Across seeds" section and
``seeds.json``).

A model named ``X-seed<N>`` is seed N of the recipe ``X``, and ``X`` itself is seed 0 (the names
``calbench reproduce`` publishes). Groups are formed per task and elicitation and listed only
where at least two seeds were evaluated; runs still running are left out, and each seed's n is
shown (a seed evaluated on fewer questions stands out). The sd is the sample standard deviation
(ddof = 1) of the seeds' point values: it measures how much the recipe's outcome moves with its
seed (training data order, sampling and, in ``calbench reproduce``, the test pool), which each
seed's bootstrap CI (resampling that seed's questions) does not.
"""

from __future__ import annotations

import re
import sys
from html import escape
from statistics import fmean, stdev
from typing import Any

from calbench.report.leaderboard_formats import md_escape

SEED_SUFFIX = re.compile(r"^(?P<family>.+)-seed(?P<seed>\d+)$")
METRICS = (("accuracy", "accuracy"), ("ece", "ECE"), ("brier", "Brier"), ("auroc", "AUROC"))


def recipe_and_seed(model: str) -> tuple[str, int]:
    """``"x-rlcr-seed2"`` -> ``("x-rlcr", 2)``; a name without the suffix is seed 0 of itself."""
    m = SEED_SUFFIX.match(model)
    return (m["family"], int(m["seed"])) if m else (model, 0)


def seed_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard rows grouped by (task, elicitation, recipe), for recipes with >= 2 seeds.

    Each group: ``task``, ``elicitation``, ``recipe``, ``seeds`` (each seed's model, n and
    metric dicts with value/lo/hi) and ``summary`` (per metric: ``mean``, ``sd``, ``n_seeds``
    over the seeds where the metric has a value).
    """
    groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "running":  # partial: its numbers move as the run goes on
            continue
        recipe, seed = recipe_and_seed(r["model"])
        group = groups.setdefault((r["task"], r["elicitation"], recipe), {})
        if seed in group:  # two runs of one model, or X and X-seed0: keep the first, say so
            print(
                f"calbench leaderboard: note: {r['run']} and {group[seed]['run']} are both seed "
                f"{seed} of {recipe} on {r['task']}; the seeds table uses {group[seed]['run']}",
                file=sys.stderr,
            )
            continue
        group[seed] = r
    out = []
    for (task, elicitation, recipe), by_seed in sorted(groups.items()):
        if len(by_seed) < 2:
            continue
        seeds = [
            {"seed": s, "model": r["model"], "n": r["n"]} | {k: r.get(k) for k, _ in METRICS}
            for s, r in sorted(by_seed.items())
        ]
        summary = {}
        for k, _ in METRICS:
            vals = [v for s in seeds if (v := (s[k] or {}).get("value")) is not None]
            summary[k] = {
                "mean": fmean(vals) if vals else None,
                "sd": stdev(vals) if len(vals) > 1 else None,
                "n_seeds": len(vals),
            }
        out.append(
            {"task": task, "elicitation": elicitation, "recipe": recipe}
            | {"seeds": seeds, "summary": summary}
        )
    return out


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    if m.get("lo") is None or m.get("hi") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def _mean_sd(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "—"
    sd = "" if s["sd"] is None else f" ± {s['sd']:.3f}"
    return f"**{s['mean']:.3f}{sd}** ({s['n_seeds']} seeds)"


def seeds_markdown(groups: list[dict[str, Any]]) -> str:
    """The "Across seeds" section of leaderboard.md ("" without any group)."""
    if not groups:
        return ""
    lines = [
        "## Across seeds",
        "",
        "Models named `X-seed<N>` are seed N of the recipe `X` (`X` itself is seed 0). Per recipe:"
        " each seed's value [95% bootstrap CI over its questions], then the mean ± sd (ddof 1)"
        " over seeds.",
        "",
    ]
    header = ["task", "recipe", "seed", "n", *(h for _, h in METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * 3 + ["---:"] * 5) + "|"]
    for g in groups:
        name = [md_escape(g["task"]), md_escape(g["recipe"])]
        for s in g["seeds"]:
            cells = [*name, str(s["seed"]), str(s["n"]), *(_ci(s[k]) for k, _ in METRICS)]
            lines.append("| " + " | ".join(cells) + " |")
        cells = [*name, "mean ± sd", "", *(_mean_sd(g["summary"][k]) for k, _ in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seeds_html(groups: list[dict[str, Any]]) -> str:
    """The same section for index.html ("" without any group)."""
    if not groups:
        return ""
    head = ["task", "recipe", "seed", "n", *(h for _, h in METRICS)]
    trs = []
    for g in groups:
        name = [escape(g["task"]), escape(g["recipe"])]
        for s in g["seeds"]:
            cells = [*name, str(s["seed"]), str(s["n"]), *(_ci(s[k]) for k, _ in METRICS)]
            trs.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        means = [_mean_sd(g["summary"][k]).replace("**", "") for k, _ in METRICS]
        cells = [*name, "mean ± sd", "", *means]
        trs.append("<tr><th>" + "</th><th>".join(cells) + "</th></tr>")
    return (
        '<h2 id="seeds">Across seeds</h2>\n<p class="note">Models named <code>X-seed&lt;N&gt;'
        "</code> are seed N of the recipe <code>X</code> (<code>X</code> itself is seed 0): each "
        "seed's value [95% bootstrap CI], then the mean ± sd (ddof 1) over seeds.</p>\n"
        '<div class="table-wrap"><table class="seeds"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>\n"
        + "\n".join(trs)
        + "\n</tbody></table></div>"
    )

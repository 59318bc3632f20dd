"""Which leaderboard rows are ranked, on what, and in which order.

Ranking rule (also on the page and in docs/reports.md): within a task, rows are ordered by the primary
metric — the **Brier score** by default, a proper scoring rule, so it rewards a model for being
right *and* for saying how sure it is honestly, and cannot be gamed by calibrating a useless model
(a model that always answers "50%" on a coin-flip task has ECE 0 but Brier 0.25) — computed over
**all n records** of each run, an unparsed confidence counted as 0.5 (``RANK_POLICY``), so every
ranked row of a task is scored on the same questions. Going down the ordered table, a row that
cannot be told apart from the row above gets the same rank as that row, and both are marked
``=``; otherwise it gets its position (1-based, "competition" ranking: 1, =2, =2, 4). Sharing is
chained, so a run of indistinguishable rows all share the rank of the first. "Cannot be told
apart" (:func:`tie_test`) is a **paired** test where the two rows share their questions and both
runs' records are at hand (every ranked row of a task answers the same questions): the paired
bootstrap 95% CI of the difference in the ranking metric (``PAIRED_N_BOOTSTRAP`` resamples of the
shared ids, seed ``PAIRED_SEED``, policy ``RANK_POLICY``; :func:`calbench.report.compare.
compare_records`) contains 0. Elsewhere (no samples.jsonl, or ranking by parse rate, which the
metrics suite does not compute) it is overlap of the two marginal 95% CIs, a conservative test (a
difference can be real although the CIs overlap). Two runs of one model family usually find the
same questions hard, so the paired test separates rows that marginal CIs cannot. Each ranked row
records the test that compared it with the row above (``rank_vs_above``) and the test behind its
``=`` (``rank_test``).

A row is listed, with all its numbers, but not ranked (``rank`` null, ``unranked_reason`` says
why) when its manifest status is not ``complete`` (a run still running), its confidence parse
rate is below ``MIN_PARSE_RATE``, its accuracy is at the floor (95% Wilson upper bound below
``FLOOR_ACCURACY``, or fewer than ``MIN_EACH_OUTCOME`` right or wrong answers), the ranking metric is undefined, or its question ids differ from those of
the task's other rankable rows (e.g. another ``--limit``). The other metric columns are the
``drop`` view: each metric over the records whose confidence parsed.

Recalibrated rows (``calbench leaderboard --recalibrate``: ``<model> +<method>``, a run's records
with cross-fitted recalibrated confidences, ``manifest["recalibration"]`` set) are listed, never
ranked (:func:`derived_reason`): a map fitted on the task's own answers is a post-hoc baseline,
not the model's stated confidence, and would otherwise outrank the rows it was derived from.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from calbench.core.errors import UsageError
from calbench.core.runs import Run, parse_rate, wilson_interval

# (key, header, higher is better). parse_rate is the share of records with a parsed confidence.
COLUMNS: list[tuple[str, str, bool]] = [
    ("accuracy", "accuracy", True),
    ("ece", "ECE", False),
    ("smooth_ece", "smooth ECE", False),
    ("brier", "Brier", False),
    ("brier_rel", "Brier REL", False),
    ("brier_res", "Brier RES", True),
    ("auroc", "AUROC", True),
    ("aurc", "AURC", False),
    ("parse_rate", "parse rate", True),
]
HIGHER_IS_BETTER = {k: h for k, _, h in COLUMNS}
HEADERS = {k: h for k, h, _ in COLUMNS}
DEFAULT_RANK_BY = "brier"

# A missing confidence scores as "no information": 0.25 Brier whether the answer was right or
# wrong. fill=0 (the RLCR evaluator's choice) would score it as a confident "I am wrong", the
# best possible score on a wrong answer, rewarding format failures on tasks most answers miss.
RANK_POLICY = "fill=0.5"
MIN_PARSE_RATE = 0.5  # below this the ranked number mostly measures the fill, not the model
FLOOR_ACCURACY = 0.05  # 95% Wilson upper bound of accuracy below this: at the floor
# Fewer right (or wrong) answers than this and discrimination (AUROC, resolution) rests on a
# handful of questions: 1 right answer in 100 is at the floor even where Wilson's bound (0.054)
# cannot exclude 5%.
MIN_EACH_OUTCOME = 10
# The paired "=" test: one seed for every pair (a rebuilt leaderboard is identical), and 1000
# resamples: about 0.02 s a pair for Brier on 817 questions, 0.5 s for smooth ECE.
PAIRED_N_BOOTSTRAP = 1000
PAIRED_SEED = 0
# Metrics the paired test can compute (parse_rate is not in the metrics suite).
PAIRED_METRICS = frozenset(HIGHER_IS_BETTER) - {"parse_rate"}
PAIRED, CI_OVERLAP = "paired bootstrap", "CI overlap"


def ranking(run: Run, metric: str) -> dict[str, Any]:
    """``{"metric", "policy", "n", "value", "lo", "hi"}``: ``metric`` over all the run's records
    under ``RANK_POLICY`` (values None when the run lacks the records to compute it)."""
    out: dict[str, Any] = {"metric": metric, "policy": RANK_POLICY, "n": run.n}
    if metric == "parse_rate":
        return out | parse_rate(run)
    summary = run.summary_under(RANK_POLICY)
    if summary is None:
        return out | {"value": None, "lo": None, "hi": None}
    m = (summary.get("metrics") or {}).get(metric) or {}
    out["n"] = summary.get("n" if metric == "accuracy" else "n_scored", run.n)
    return out | {k: m.get(k) for k in ("value", "lo", "hi")}


def accuracy_upper(run: Run) -> float | None:
    """95% Wilson upper bound of accuracy: unlike the bootstrap percentile CI it does not collapse
    to [0, 0] when no answer is right, so "at the floor" means the data exclude 5% accuracy."""
    if run.records:
        k, n = sum(bool(r["correct"]) for r in run.records), len(run.records)
    else:
        acc = run.metric("accuracy")["value"]
        if acc is None or not run.n:
            return None
        k, n = round(acc * run.n), run.n
    return wilson_interval(k, n)[1]


def run_reasons(run: Run) -> list[str]:
    """Why ``run`` cannot be ranked, judged on the run alone (question ids and an undefined
    ranking value are judged by :func:`rank_rows`)."""
    out = []
    if isinstance(run.manifest.get("recalibration"), dict):
        out.append(derived_reason(run.manifest["recalibration"]))
    if run.status not in (None, "complete"):
        out.append(f"run status {run.status!r}, not complete")
    if run.records is None:
        out.append("no samples.jsonl: its questions cannot be compared with the other rows'")
    pr = parse_rate(run)["value"]
    if pr is not None and pr < MIN_PARSE_RATE:
        out.append(f"confidence parse rate {pr:.0%}, below {MIN_PARSE_RATE:.0%}")
    hi = accuracy_upper(run)
    if hi is not None and hi < FLOOR_ACCURACY:
        out.append(
            f"accuracy at the floor: 95% Wilson upper bound {hi:.3f}, below {FLOOR_ACCURACY}"
        )
    elif run.records:
        right = sum(bool(r["correct"]) for r in run.records)
        fewest = min(right, len(run.records) - right)
        if fewest < MIN_EACH_OUTCOME:
            which = "right" if right <= len(run.records) - right else "wrong"
            out.append(
                f"only {fewest} {which} answers (fewer than {MIN_EACH_OUTCOME}): "
                "too few to measure calibration"
            )
    return out


def derived_reason(settings: dict[str, Any]) -> str:
    """The unranked reason of a recalibrated row (``settings``: its fit settings)."""
    return (
        f"derived row: {settings.get('method')} recalibration of the stated confidences, "
        f"cross-fitted ({settings.get('k')} folds, seed {settings.get('seed')}); a "
        "post-hoc baseline, not ranked against stated confidences"
    )


def _common_questions(rows: list[dict[str, Any]]) -> frozenset[str] | None:
    """The question-id set (``_ids``) most of a task's otherwise rankable rows were evaluated on
    (ties: the larger set); None when no such row has ids."""
    sets = [r["_ids"] for r in rows if r.get("_ids") is not None and not r.get("_reasons")]
    if not sets:
        return None
    return max(set(sets), key=lambda s: (sets.count(s), len(s), sorted(s)))


def _overlap(a: dict, b: dict) -> bool:
    """Whether two 95% CIs overlap. A missing CI cannot separate two rows, so it overlaps."""
    if None in (a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")):
        return True
    return a["lo"] <= b["hi"] and b["lo"] <= a["hi"]


def tie_test(above: dict[str, Any], row: dict[str, Any], metric: str) -> dict[str, Any]:
    """Whether ``row`` cannot be told apart from the ranked row ``above`` it on ``metric``:
    ``{"test", "shared"}``, plus for the paired test ``diff`` (row − above), ``lo``, ``hi`` (its
    95% paired bootstrap CI), ``n_paired``, ``n_bootstrap``, ``seed``, ``policy``. The paired
    test is used when both rows carry their records (``_records``) on the same question ids
    (``_ids``) and ``metric`` is in ``PAIRED_METRICS``; CI overlap of ``ranking`` otherwise.
    An undefined CI cannot separate two rows: shared."""
    ra, rb = above.get("_records"), row.get("_records")
    ids_a, ids_b = above.get("_ids"), row.get("_ids")
    if metric in PAIRED_METRICS and ra and rb and ids_a is not None and ids_a == ids_b:
        # Imported here: compare imports this module (its metric directions and names).
        from calbench.report.compare import compare_records

        res = compare_records(
            ra,
            rb,
            metrics=(metric,),
            policy=RANK_POLICY,
            n_bootstrap=PAIRED_N_BOOTSTRAP,
            seed=PAIRED_SEED,
            explain=False,
        )
        m = res["metrics"][metric]
        shared = m["lo"] is None or m["hi"] is None or m["lo"] <= 0 <= m["hi"]
        return {
            "test": PAIRED,
            "shared": shared,
            "diff": m["diff"],
            "lo": m["lo"],
            "hi": m["hi"],
            "n_paired": res["n_paired"],
            "n_bootstrap": PAIRED_N_BOOTSTRAP,
            "seed": PAIRED_SEED,
            "policy": RANK_POLICY,
        }
    return {"test": CI_OVERLAP, "shared": _overlap(row["ranking"], above["ranking"])}


def rank_rows(rows: list[dict[str, Any]], metric: str = DEFAULT_RANK_BY) -> list[dict[str, Any]]:
    """Order rows by task, then best ``ranking`` value first; set ``rank``, ``rank_shared`` and
    ``unranked_reason`` by the rule in the module docstring. Each row's ``ranking`` (see
    :func:`ranking`) must be of ``metric``; ``_reasons`` (:func:`run_reasons`), ``_ids`` (the
    run's question ids) and ``_records`` (its records, for the paired test of :func:`tie_test`),
    when present, take part. Sets ``rank_vs_above`` (:func:`tie_test` against the ranked row
    above, None for the first) and ``rank_test`` (the test behind a shared rank, else None).
    Returns a new list (rows updated in place)."""
    if metric not in HIGHER_IS_BETTER:
        raise UsageError(f"cannot rank by {metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
    if any(r["ranking"]["metric"] != metric for r in rows):
        raise ValueError(f"rows were built for another ranking metric than {metric!r}")
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    out = []
    for task in sorted(by_task):
        group = by_task[task]
        common = _common_questions(group)
        for r in group:
            reasons = list(r.get("_reasons") or [])
            ids = r.get("_ids")
            if common is not None and ids is not None and ids != common:
                reasons.append(
                    f"different questions: {len(ids)} ids, {len(ids & common)} of them "
                    f"among the {len(common)} the task's other rows were asked"
                )
            if r["ranking"]["value"] is None:
                reasons.append(f"{HEADERS[metric]} undefined under {RANK_POLICY}")
            r["unranked_reason"] = "; ".join(reasons) or None
        ranked = sorted(
            (r for r in group if r["unranked_reason"] is None),
            key=lambda r: (sign * r["ranking"]["value"], r["model"], r["elicitation"], r["run"]),
        )
        unranked = sorted(
            (r for r in group if r["unranked_reason"] is not None),
            key=lambda r: (r["model"], r["elicitation"], r["run"]),
        )
        for i, r in enumerate(ranked):
            r["rank_shared"], r["rank_test"] = False, None
            r["rank_vs_above"] = tie_test(ranked[i - 1], r, metric) if i else None
            if r["rank_vs_above"] and r["rank_vs_above"]["shared"]:
                above = ranked[i - 1]
                r["rank"] = above["rank"]
                r["rank_shared"] = above["rank_shared"] = True
                r["rank_test"] = r["rank_vs_above"]["test"]
                # The first row of a tie is "=" by the test that compared it with the next row.
                above["rank_test"] = above["rank_test"] or r["rank_test"]
            else:
                r["rank"] = i + 1
        for r in unranked:
            r["rank"], r["rank_shared"], r["rank_test"], r["rank_vs_above"] = (
                None,
                False,
                None,
                None,
            )
        out.extend(ranked + unranked)
    return out


def rank_label(row: dict[str, Any]) -> str:
    """``1``, ``=2``; ``—`` for an unranked row, ``— (running)`` for a run not complete."""
    if row["rank"] is None:
        status = row.get("status")
        return "—" if status in (None, "complete") else f"— ({status})"
    return f"={row['rank']}" if row["rank_shared"] else str(row["rank"])


def tie_note(row: dict[str, Any]) -> str | None:
    """Why a row's rank is shared, in a sentence (None when it is not)."""
    if not row.get("rank_shared"):
        return None
    vs = row.get("rank_vs_above")
    if not (vs and vs["shared"]):
        return f"rank shared with the row below ({row.get('rank_test')})"
    if vs["test"] == PAIRED:
        ci = "undefined" if vs["lo"] is None else f"[{vs['lo']:+.4f}, {vs['hi']:+.4f}]"
        return (
            f"rank shared with the row above: paired bootstrap 95% CI of the difference "
            f"{ci} over {vs['n_paired']} shared questions contains 0"
        )
    return "rank shared with the row above: their 95% CIs overlap"


def rank_note(metric: str) -> str:
    """The ranking rule in a paragraph, for the top of the Markdown table and the page."""
    direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    return (
        f"Ranked within each task by {HEADERS[metric]} ({direction} is better) over all n records "
        f"of a run, an unparsed confidence counted as 0.5 (policy {RANK_POLICY}: a missing "
        f"confidence scores as no information, where fill=0 would score it as a sure 'wrong' "
        f"and reward format failures on hard tasks), so every ranked row of a task answers the "
        f"same questions. A row that cannot be told apart from the row above shares its rank "
        f"(marked =): where both rows' records are at hand, by a paired test (the 95% paired "
        f"bootstrap CI of the {HEADERS[metric]} difference over their shared questions, "
        f"{PAIRED_N_BOOTSTRAP} resamples, seed {PAIRED_SEED}, contains 0), else by overlap of "
        f"the two 95% CIs; leaderboard.json says which test each row's = used (rank_test). "
        f"Not ranked (rank —, reason given): runs not complete, confidence parse rate below "
        f"{MIN_PARSE_RATE:.0%}, accuracy at the floor (95% Wilson upper bound below "
        f"{FLOOR_ACCURACY}, or fewer than {MIN_EACH_OUTCOME} right or wrong answers), questions that differ from the task's other rows (e.g. another "
        f"--limit), an undefined ranking metric. The other metric columns are the drop view: "
        f"each metric over the answers whose confidence parsed. Cells: value [95% bootstrap CI]; "
        f"parse rate: share of answers with a parsed confidence [95% Wilson CI]."
    )

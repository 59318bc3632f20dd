"""``calbench compare RUN_A RUN_B``: is run B better calibrated than run A on the same questions?

Records are paired by id (compared as text); a record present in only one run is reported
(``only_a``/``only_b``) and left out, and two runs without a shared id are a usage error. For each
metric in ``COMPARED`` the difference B − A comes with a **paired** bootstrap 95% percentile CI
(:func:`calbench.metrics.paired_bootstrap`): each resample draws the paired ids with replacement
and recomputes the metric on both runs over those same ids, so question difficulty, which both
runs share, cancels out of the difference. Every metric uses the same seed, hence the same
resamples. This interval is much narrower than the gap between two separate CIs suggests when the
runs agree on which questions are hard.

The unparsed-confidence policy (``--policy``, default ``drop`` as in ``calbench score``) applies
to each run separately: accuracy is over all paired records; the other metrics, under ``drop``,
over the paired records whose confidence parsed in that run.

Writes ``DIR/compare.json``: ``run_a``/``run_b`` (source, dataset, model, n), ``n_paired``,
``only_a``, ``only_b`` (ids), ``policy``, ``ci`` (method, level, n_bootstrap, seed) and
``metrics.<name>`` = ``{a, b, diff, lo, hi}`` (diff = b − a; None where undefined, with
``reason``).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json
from calbench.metrics import MetricInputError, align_records, paired_bootstrap, summarize
from calbench.metrics.bootstrap import LEVEL
from calbench.report.ranking import HEADERS, HIGHER_IS_BETTER
from calbench.report.score_inputs import load_records

N_BOOTSTRAP = 1000  # as calbench score
POLICIES = ("drop", "fill=0.5", "fill=0")  # calbench.metrics.POLICIES, checked by the metrics
COMPARED = ("accuracy", "ece", "smooth_ece", "brier", "auroc", "aurc")
CI_METHOD = (
    "paired percentile bootstrap: each resample draws the paired ids with replacement and "
    "recomputes the metric on both runs over them; diff = b - a"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_a",
        metavar="RUN_A",
        help="baseline: a calbench run folder or samples.jsonl (or one RLCR run)",
    )
    parser.add_argument("run_b", metavar="RUN_B", help="the run compared with RUN_A (diff = B − A)")
    parser.add_argument(
        "--output", "-o", default=".", metavar="DIR", help="folder for compare.json (default: .)"
    )
    parser.add_argument(
        "--n-bootstrap",
        type=int,
        default=N_BOOTSTRAP,
        help=f"paired bootstrap resamples (default {N_BOOTSTRAP})",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--policy",
        choices=list(POLICIES),
        default="drop",
        help="unparsed confidences: drop those records (default, as calbench "
        "score), or fill with 0.5 / 0 (the leaderboard ranks with fill=0.5)",
    )


def load_run_records(path: str | os.PathLike) -> tuple[str, str, list[dict]]:
    """(dataset, model, records) of one run; an input holding several runs (an RLCR file with
    several models) is a usage error, since the comparison needs exactly one on each side."""
    loaded = load_records(path)
    if len(loaded) != 1:
        names = ", ".join(f"{d}/{m}" for d, m in sorted(loaded)[:5])
        raise UsageError(
            f"{path}: holds {len(loaded)} runs ({names}); compare needs one run per side"
        )
    (((dataset, model), records),) = loaded.items()
    return dataset, model, records


def _text_ids(records: list[dict]) -> list[dict]:
    # Ids are unique as text within a run (calbench.core.records.check_id); 7 and "7" are one
    # question, so pair on the text.
    return [
        {"id": str(r["id"]), "correct": r["correct"], "confidence": r["confidence"]}
        for r in records
    ]


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def compare_records(
    records_a: list[dict],
    records_b: list[dict],
    *,
    metrics: tuple[str, ...] = COMPARED,
    policy: str = "drop",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    explain: bool = True,
) -> dict[str, Any]:
    """The paired comparison of two runs' records (dicts with ``id``, ``correct``,
    ``confidence``): ``n_paired``, ``only_a``, ``only_b``, ``policy``, ``ci`` and
    ``metrics.<name>`` = {a, b, diff, lo, hi} with diff = b − a. UsageError when the
    runs share no id or a parameter is invalid. ``explain``: add each undefined metric's
    ``reason`` (one point-value pass of the suite per run)."""
    try:
        al = align_records(_text_ids(records_a), _text_ids(records_b))
    except MetricInputError as e:
        raise UsageError(str(e)) from None
    n = len(al["ids"])
    if n == 0:
        raise UsageError(
            f"the runs share no question id ({len(al['only_a'])} ids only in A, "
            f"{len(al['only_b'])} only in B): nothing to pair"
        )
    out: dict[str, Any] = {
        "n_paired": n,
        "only_a": al["only_a"],
        "only_b": al["only_b"],
        "policy": policy,
        "ci": {
            "method": CI_METHOD,
            "level": LEVEL,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "unit": "paired id",
        },
        "metrics": {},
    }
    try:
        # Reasons for undefined point values (e.g. AUROC when every answer is right), from the
        # same suite that scores a single run.
        reasons = {
            side: summarize(
                al[f"correct_{side}"], al[f"conf_{side}"], n_bootstrap=0, policy=policy
            ).get("reasons", {})
            if explain
            else {}
            for side in ("a", "b")
        }
        for m in metrics:
            # paired_bootstrap gives metric(first) - metric(second): B first, so diff = b - a.
            r = paired_bootstrap(
                al["correct_b"],
                al["conf_b"],
                al["correct_a"],
                al["conf_a"],
                metric=m,
                n_bootstrap=n_bootstrap,
                seed=seed,
                policy=policy,
            )
            entry = {
                "a": _finite(r["b"]),
                "b": _finite(r["a"]),
                "diff": _finite(r["diff"]),
                "lo": _finite(r["lo"]),
                "hi": _finite(r["hi"]),
            }
            why = [
                f"run {side.upper()}: {reasons[side][m]}"
                for side in ("a", "b")
                if m in reasons[side]
            ]
            if why:
                entry["reason"] = "; ".join(why)
            out["metrics"][m] = entry
    except MetricInputError as e:
        raise UsageError(str(e)) from None
    return out


def verdict(name: str, m: dict[str, Any]) -> str:
    """Which run the paired CI favours on metric ``name``: "B better", "A better", or "no clear
    difference" when the 95% CI of b − a contains 0 (or is undefined)."""
    if m["lo"] is None or m["hi"] is None or m["lo"] <= 0 <= m["hi"]:
        return "no clear difference"
    b_higher = m["lo"] > 0
    return "B better" if b_higher == HIGHER_IS_BETTER[name] else "A better"


def print_table(result: dict[str, Any]) -> None:
    a, b = result["run_a"], result["run_b"]
    console = Console(width=max(Console().width, 100))

    def say(text: str) -> None:  # names and paths come from the runs: never rich markup
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say(f"A: {a['model']} · {a['dataset']} ({a['source']}, n={a['n']})")
    say(f"B: {b['model']} · {b['dataset']} ({b['source']}, n={b['n']})")
    say(
        f"paired on {result['n_paired']} ids; left out: {len(result['only_a'])} only in A, "
        f"{len(result['only_b'])} only in B; policy {result['policy']}; "
        f"{result['ci']['n_bootstrap']} paired resamples, seed {result['ci']['seed']}"
    )
    table = Table(title="calbench compare (diff = B − A, paired bootstrap 95% CI)")
    for col in ("metric", "A", "B", "B − A", "95% CI", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")

    def f(x: float | None, sign: bool = False) -> str:
        return "n/a" if x is None else (f"{x:+.4f}" if sign else f"{x:.4f}")

    for name, m in result["metrics"].items():
        ci = "" if m["lo"] is None else f"[{m['lo']:+.4f}, {m['hi']:+.4f}]"
        direction = "higher" if HIGHER_IS_BETTER[name] else "lower"
        table.add_row(
            f"{HEADERS[name]} ({direction} better)",
            f(m["a"]),
            f(m["b"]),
            f(m["diff"], sign=True),
            ci,
            verdict(name, m),
        )
    console.print(table)
    for name, m in result["metrics"].items():
        if "reason" in m:
            say(f"{HEADERS[name]} undefined: {m['reason']}")


def run(args: argparse.Namespace) -> int:
    if args.n_bootstrap < 1:
        raise UsageError("--n-bootstrap must be >= 1")
    if args.seed < 0:
        raise UsageError("--seed must be >= 0")
    sides = {}
    for side, path in (("a", args.run_a), ("b", args.run_b)):
        dataset, model, records = load_run_records(path)
        sides[side] = (
            {"source": str(path), "dataset": dataset, "model": model, "n": len(records)},
            records,
        )
    result = {"run_a": sides["a"][0], "run_b": sides["b"][0]}
    result |= compare_records(
        sides["a"][1],
        sides["b"][1],
        policy=args.policy,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
    )
    out = Path(args.output) / "compare.json"
    atomic_write_json(out, result)
    print_table(result)
    print(f"wrote {out}")
    return 0

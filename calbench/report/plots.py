"""``calbench plot``: reliability diagrams and risk–coverage plots of evaluated runs.

The figures are drawn by :mod:`calbench.report.plot_reliability` (where a model is
miscalibrated) and :mod:`calbench.report.plot_risk_coverage` (what abstaining on low confidence
buys); ``--by`` splits runs into panels by :mod:`calbench.report.plot_groups`; files are written
by :func:`calbench.report.plot_style.save_figure`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from calbench.core.errors import UsageError
from calbench.core.runs import Run, load_runs
from calbench.report.plot_groups import MAX_PANELS, group_runs
from calbench.report.plot_reliability import reliability_figure
from calbench.report.plot_risk_coverage import risk_coverage_figure
from calbench.report.plot_style import FORMATS, save_figure

KINDS = ("reliability", "risk-coverage")


def plot_runs(
    runs: Sequence[Run],
    out: str | os.PathLike,
    *,
    kind: str = "reliability",
    layout: str = "grid",
    dpi: int = 150,
    by: Sequence[str] | None = None,
) -> Path:
    """Draw ``runs`` into ``out``; with ``by`` (reliability, grid), one panel per group of the
    records' meta fields (:func:`group_runs`)."""
    if by:
        if kind != "reliability" or layout != "grid":
            raise UsageError(
                "--by draws reliability panels in a grid: use it without "
                "--kind risk-coverage and --layout overlay"
            )
        panels, labels = group_runs(runs, by)
        fig = reliability_figure(panels, layout="grid", groups=labels)
    elif kind == "reliability":
        fig = reliability_figure(runs, layout=layout)
    elif kind == "risk-coverage":
        fig = risk_coverage_figure(runs)
    else:
        raise UsageError(f"unknown plot kind {kind!r}; known: {', '.join(KINDS)}")
    return save_figure(fig, out, dpi=dpi)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folder(s), or folders searched recursively for runs",
    )
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="reliability",
        help="reliability diagram (default) or selective risk vs coverage",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="output .png or .svg (default: reliability.png / risk_coverage.png)",
    )
    parser.add_argument(
        "--layout",
        choices=("grid", "overlay"),
        default="grid",
        help="several runs: small multiples (default) or one overlaid diagram",
    )
    parser.add_argument(
        "--task", action="append", default=None, help="only runs of this task (repeatable)"
    )
    parser.add_argument(
        "--model", action="append", default=None, help="only runs of this model (repeatable)"
    )
    parser.add_argument("--dpi", type=int, default=150, help="PNG resolution (default 150)")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="recompute metrics from samples.jsonl instead of reading metrics.json",
    )
    parser.add_argument(
        "--by",
        default=None,
        metavar="KEY[,KEY]",
        help="one reliability panel per group of these record meta fields "
        f"(e.g. num_terms for chain_sum; at most {MAX_PANELS} panels)",
    )


def run(args: argparse.Namespace) -> int:
    out = args.out or ("reliability.png" if args.kind == "reliability" else "risk_coverage.png")
    if Path(out).suffix.lower() not in FORMATS:
        raise UsageError(f"--out {out}: must end in {' or '.join(FORMATS)}")
    if args.dpi <= 0:
        raise UsageError("--dpi must be positive")
    runs = load_runs(args.runs, recompute=args.recompute)
    if args.task:
        runs = [r for r in runs if r.task in args.task]
    if args.model:
        runs = [r for r in runs if r.model in args.model]
    if not runs:
        raise UsageError("no run matches --task/--model")
    by = [k for k in args.by.split(",") if k] if args.by else None
    if args.by is not None and not by:
        raise UsageError("--by needs at least one meta field name")
    path = plot_runs(runs, out, kind=args.kind, layout=args.layout, dpi=args.dpi, by=by)
    print(
        f"wrote {path} ({len(runs)} run{'s' if len(runs) != 1 else ''}"
        f"{', by ' + ','.join(by) if by else ''})"
    )
    return 0

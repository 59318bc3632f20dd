"""``calbench plot``: reliability diagrams and risk–coverage plots of evaluated runs.

A reliability diagram answers *where* a model is miscalibrated: each bar is the accuracy of the
answers whose stated confidence fell in that bin; the shaded gap between a bar and the diagonal is
the miscalibration there (red: more confident than accurate; gold: less). The smooth-ECE curve
(kernel-smoothed accuracy as a function of confidence, with its bootstrap band) does the same
without bin edges. Underneath, the histogram of stated confidences shows how much data each
region rests on — verbalized confidences pile up on a few round values (0.9, 0.95, 1.0), and a bar
built on three answers says little.

Drawn with matplotlib's object API (``Figure``, Agg canvas) so no GUI backend or pyplot global
state is touched.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from calbench.core.errors import UsageError
from calbench.core.runs import Run, load_runs, summarize_records
from calbench.report.score import group_records

FORMATS = (".png", ".svg")
KINDS = ("reliability", "risk-coverage")

# Colour-blind-safe (Okabe–Ito) palette for runs drawn together.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
BAR = "#8FB0DA"
BAR_EDGE = "#2F5D95"
OVER = "#D62728"  # confidence above accuracy
UNDER = "#C99400"  # confidence below accuracy
OVER_FILL = "#F6CDCD"  # light, opaque versions: the hatch lines carry the saturated colour
UNDER_FILL = "#FAEBC2"
CURVE = "#1A1A1A"
MAX_PANELS = 12  # --by: one reliability panel per group; more would be unreadable
XLIM = (-0.01, 1.015)  # a little room so bars at 0 and 1 are not cut by the axes

# Reproducible files: the committed leaderboard/ must not change when nothing changed.
_RC = {
    "svg.hashsalt": "calbench",
    "svg.fonttype": "none",  # text stays text: smaller files, selectable, searchable
    # Labels carry model names from runs: show them literally, never as mathtext or TeX.
    "text.parse_math": False,
    "text.usetex": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_ci(m: dict[str, float | None], digits: int = 3) -> str:
    """``0.123 [0.101, 0.145]`` (value and 95% CI), ``—`` when undefined."""
    if m.get("value") is None:
        return "—"
    if m.get("lo") is None or m.get("hi") is None:
        return _fmt(m["value"], digits)
    return f"{_fmt(m['value'], digits)} [{_fmt(m['lo'], digits)}, {_fmt(m['hi'], digits)}]"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _bins(run: Run) -> list[dict]:
    rel = run.summary.get("reliability") or {}
    return [b for b in rel.get("bins") or [] if b.get("n") and b.get("accuracy") is not None]


def _title(run: Run, width: int = 48, group: str | None = None) -> str:
    model = textwrap.shorten(str(run.model), width=width, placeholder="…")
    ece = fmt_ci(run.metric("ece"))
    if group is not None:
        group = textwrap.shorten(group, width=width, placeholder="…")
        return f"{model}\n{run.task} · {run.elicitation}\n{group} · n={run.n}\nECE {ece}"
    return f"{model}\n{run.task} · {run.elicitation} · n={run.n}\nECE {ece}"


def _draw_reliability(
    ax, hist_ax, run: Run, *, show_counts: bool = True, group: str | None = None
) -> None:
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="#888888", zorder=1)
    for b in _bins(run):
        lo, hi = float(b["lo"]), float(b["hi"])
        w = hi - lo
        acc = float(b["accuracy"])
        conf = float(b["mean_conf"]) if b.get("mean_conf") is not None else (lo + hi) / 2
        pad = w * 0.06
        x0, bw = lo + pad, w - 2 * pad
        # Solid up to the lower of accuracy and confidence; the rest of the way to the bin's mean
        # confidence (its point on the diagonal) is the gap, i.e. that bin's calibration error.
        # The dark outline always spans 0..accuracy, so accuracy reads the same either way.
        bottom, top = sorted((acc, conf))
        ax.bar(x0, bottom, width=bw, align="edge", color=BAR, lw=0, zorder=2)
        over = conf > acc
        # Opaque light fill with saturated hatch lines: with an alpha, the SVG output paints the
        # hatch in the fill colour and it disappears.
        ax.bar(
            x0,
            top - bottom,
            bottom=bottom,
            width=bw,
            align="edge",
            facecolor=OVER_FILL if over else UNDER_FILL,
            hatch="////" if over else "\\\\\\\\",
            edgecolor=OVER if over else UNDER,
            lw=0,
            zorder=3,
        )
        ax.bar(x0, acc, width=bw, align="edge", fill=False, edgecolor=BAR_EDGE, lw=0.9, zorder=4)
        if show_counts:
            ax.text(
                lo + w / 2,
                max(acc, conf) + 0.015,
                str(b["n"]),
                ha="center",
                va="bottom",
                fontsize=6.5,
                color="#555555",
                zorder=6,
            )
    _draw_curve(ax, run, color=CURVE, band_alpha=0.13)
    ax.set_xlim(*XLIM)
    # Headroom above 1.0 holds the stats box, so it never hides a full-height bin or its count.
    ax.set_ylim(0, 1.34)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    sece = run.metric("smooth_ece")
    acc = run.metric("accuracy")
    brier = run.metric("brier")
    ax.set_title(_title(run, group=group), loc="left")
    ax.text(
        0.02,
        0.985,
        f"smooth ECE {fmt_ci(sece)}\naccuracy {fmt_ci(acc)}\nBrier {fmt_ci(brier)}",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=7.5,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#cccccc", "alpha": 0.9},
        zorder=7,
    )
    _draw_histogram(hist_ax, run, color=BAR_EDGE)


def _data_range(run: Run) -> tuple[float, float]:
    confs = run.confidences()
    if confs:
        return min(confs), max(confs)
    bins = _bins(run)
    if bins:
        return float(bins[0]["lo"]), float(bins[-1]["hi"])
    return 0.0, 1.0


def _draw_curve(ax, run: Run, *, color: str, band_alpha: float, label: str | None = None) -> bool:
    """Smooth calibration curve with its band, drawn only over the confidences the run used: a
    kernel estimate outside them is extrapolation, not evidence."""
    sc = run.summary.get("smooth_curve") or {}
    xs, ys = sc.get("x") or [], sc.get("y") or []
    if not xs or len(xs) != len(ys):
        return False
    lo_, hi_ = sc.get("lo") or [], sc.get("hi") or []
    has_band = len(lo_) == len(xs) == len(hi_)
    a, b = _data_range(run)
    keep = [
        i
        for i, x in enumerate(xs)
        if x is not None and ys[i] is not None and a - 1e-9 <= x <= b + 1e-9
    ]
    if len(keep) < 2:  # one distinct confidence: nothing to draw a curve through
        return False
    if has_band:
        band = [i for i in keep if lo_[i] is not None and hi_[i] is not None]
        ax.fill_between(
            [xs[i] for i in band],
            [lo_[i] for i in band],
            [hi_[i] for i in band],
            color=color,
            alpha=band_alpha,
            lw=0,
            zorder=4,
        )
    # A white halo keeps the curve legible where it crosses bars and the band.
    ax.plot(
        [xs[i] for i in keep],
        [ys[i] for i in keep],
        color=color,
        lw=1.6,
        zorder=5,
        label=label,
        path_effects=[patheffects.withStroke(linewidth=3.2, foreground="white")],
    )
    return True


def _unparsed(run: Run) -> tuple[int, int] | None:
    recs = run.records
    if not recs:
        return None
    k = sum(1 for r in recs if r["confidence"] is None)
    return (k, len(recs)) if k else None


def _draw_histogram(
    ax,
    run: Run,
    *,
    color: str,
    label: str | None = None,
    annotate: bool = True,
    offset: float = 0.0,
    bar_scale: float = 1.0,
) -> None:
    confs = run.confidences()
    if confs:
        # 0.01-wide bins centred on the hundredths, so 0.9 and 0.95 get bars of their own.
        counts = Counter(round(c, 2) for c in confs)
        total = len(confs)
    else:  # no samples.jsonl: fall back on the reliability bins' counts
        counts = Counter()
        for b in _bins(run):
            counts[round((float(b["lo"]) + float(b["hi"])) / 2, 2)] += int(b["n"])
        total = sum(counts.values())
    if not total:
        ax.text(
            0.5,
            0.5,
            "no parsed confidences",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            color="#777777",
        )
    else:
        xs = sorted(counts)
        shares = [counts[x] / total for x in xs]
        width = 0.01 if confs else min(0.05, *(b["hi"] - b["lo"] for b in _bins(run)))
        ax.bar(
            [x + offset for x in xs],
            shares,
            width=width * 0.9 * bar_scale,
            color=color,
            alpha=0.85,
            label=label,
        )
        if annotate:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            text = "most stated: " + ", ".join(f"{x:g} ({k / total:.0%})" for x, k in top)
            unparsed = _unparsed(run)
            if unparsed:
                text += f"\nno confidence parsed: {unparsed[0]} of {unparsed[1]}"
            ax.text(
                0.01,
                0.97,
                text,
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize=6.8,
                color="#333333",
            )
        # Room above the tallest bar for the note; overlays keep the tallest of all runs.
        top = max(shares) * (1.5 if annotate else 1.1)
        ax.set_ylim(0, max(top, getattr(ax, "_calbench_top", 0.0)))
        ax._calbench_top = top if annotate else max(top, getattr(ax, "_calbench_top", 0.0))
    ax.set_xlim(*XLIM)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("share")
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    ax.locator_params(axis="y", nbins=3)


def _legend_handles() -> list:
    return [
        Patch(facecolor=BAR, edgecolor=BAR_EDGE, label="accuracy in bin (n above)"),
        Patch(facecolor=OVER_FILL, hatch="////", edgecolor=OVER, lw=0, label="overconfident gap"),
        Patch(
            facecolor=UNDER_FILL,
            hatch="\\\\\\\\",
            edgecolor=UNDER,
            lw=0,
            label="underconfident gap",
        ),
        Line2D([], [], color=CURVE, lw=1.6, label="smooth calibration curve ± 95% band"),
        Line2D([], [], color="#888888", ls="--", lw=1, label="perfect calibration"),
    ]


def reliability_figure(
    runs: Sequence[Run], *, layout: str = "grid", groups: Sequence[str] | None = None
):
    """Reliability diagram(s) of ``runs``: small multiples (``layout="grid"``) or one overlay.
    ``groups`` (grid only): a label per run, shown in its panel's title (see :func:`group_runs`)."""
    if not runs:
        raise UsageError("no runs to plot")
    if groups is not None and (len(groups) != len(runs) or layout != "grid"):
        raise UsageError("group labels need the grid layout and one label per run")
    with mpl.rc_context(_RC):
        if layout == "overlay" and len(runs) > 1:
            return _reliability_overlay(runs)
        cols = min(3, len(runs))
        rows = math.ceil(len(runs) / cols)
        fig = _figure(4.2 * cols, 5.3 * rows + 0.5)
        outer = fig.add_gridspec(rows, cols)
        for i, run in enumerate(runs):
            inner = outer[i // cols, i % cols].subgridspec(
                2, 1, height_ratios=[3.4, 1], hspace=0.05
            )
            ax = fig.add_subplot(inner[0])
            hist = fig.add_subplot(inner[1], sharex=ax)
            _draw_reliability(
                ax, hist, run, show_counts=True, group=None if groups is None else groups[i]
            )
        fig.legend(
            handles=_legend_handles(),
            loc="outside lower center",
            ncols=2 if cols == 1 else 5 if cols == 3 else 3,
            fontsize=7.5,
            frameon=False,
        )
        return fig


def _reliability_overlay(runs: Sequence[Run]):
    fig = _figure(6.4, 7.2)
    gs = fig.add_gridspec(2, 1, height_ratios=[3.4, 1])
    ax = fig.add_subplot(gs[0])
    hist = fig.add_subplot(gs[1], sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="#888888", label="perfect calibration")
    for i, run in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        bins = _bins(run)
        label = (
            f"{textwrap.shorten(run.label, 60, placeholder='…')} — ECE {fmt_ci(run.metric('ece'))}"
        )
        if _draw_curve(ax, run, color=color, band_alpha=0.12, label=label):
            label = None
        if bins:
            # Binned points sized by how many answers they rest on.
            total = sum(int(b["n"]) for b in bins)
            ax.scatter(
                [b["mean_conf"] for b in bins],
                [b["accuracy"] for b in bins],
                s=[12 + 200 * int(b["n"]) / total for b in bins],
                color=color,
                alpha=0.75,
                edgecolor="white",
                lw=0.5,
                label=label,
                zorder=5,
            )
        # Side-by-side bars within each 0.01 slot, so piles at the same value stay visible.
        k = len(runs)
        _draw_histogram(
            hist,
            run,
            color=color,
            annotate=False,
            offset=0.01 * ((i + 0.5) / k - 0.5),
            bar_scale=1 / k,
        )
    ax.set_xlim(*XLIM)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    ax.set_title("Reliability: smooth curves ± 95% band; dots = bins sized by n", loc="left")
    ax.legend(loc="upper left", fontsize=7, frameon=True, framealpha=0.9)
    return fig


def risk_coverage_figure(runs: Sequence[Run]):
    """Selective risk (error rate among the answers kept) against coverage (share kept, most
    confident first), one line per run, AURC ± CI in the legend."""
    if not runs:
        raise UsageError("no runs to plot")
    with mpl.rc_context(_RC):
        fig = _figure(6.4, 4.6 + 0.35 * math.ceil(len(runs) / 2))
        ax = fig.add_subplot()
        for i, run in enumerate(runs):
            color = PALETTE[i % len(PALETTE)]
            rc = run.summary.get("risk_coverage") or {}
            cov, risk = rc.get("coverage") or [], rc.get("risk") or []
            pts = sorted(
                (c, r) for c, r in zip(cov, risk, strict=False) if c is not None and r is not None
            )
            label = (
                f"{textwrap.shorten(run.label, 60, placeholder='…')}\n"
                f"AURC {fmt_ci(run.metric('aurc'))}"
            )
            if not pts:
                ax.plot([], [], color=color, label=label + " (no curve)")
                continue
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                color=color,
                lw=1.6,
                drawstyle="steps-post" if len(pts) < 30 else "default",
                label=label,
            )
            # Risk at full coverage: what any ordering ends at, and what a confidence that
            # carries no information would average at every coverage.
            ax.axhline(pts[-1][1], color=color, lw=0.8, ls=":", alpha=0.8)
        ax.set_xlim(0, 1.005)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("coverage (share of answers kept, most confident first)")
        ax.set_ylabel("selective risk (error rate among kept)")
        ax.set_title("Risk–coverage (lower is better; dotted: risk with no abstention)", loc="left")
        # Below the axes: curves start noisy at low coverage, where an inset legend would sit.
        fig.legend(loc="outside lower center", ncols=min(2, len(runs)), fontsize=7, frameon=False)
        ax.grid(alpha=0.25)
        return fig


_SVG_ID = re.compile(r'id="([a-z][0-9a-f]{10})"')


def _stable_svg_ids(svg: str) -> str:
    """Number matplotlib's hashed clip-path/hatch/marker ids in order of appearance. The hashes
    cover full-precision layout floats, which can differ in the last bits between two renders of
    the same figure; the committed diagrams should only change when the picture does."""
    ids = list(dict.fromkeys(_SVG_ID.findall(svg)))
    if not ids:
        return svg
    mapping = {old: f"{old[0]}{i}" for i, old in enumerate(ids)}
    pattern = re.compile("|".join(re.escape(k) for k in mapping))
    return pattern.sub(lambda m: mapping[m.group(0)], svg)


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save as PNG or SVG (by extension) without timestamps, so regenerated files are stable."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise UsageError(f"{path}: output must end in {' or '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(_RC):
        if path.suffix.lower() == ".svg":
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
            path.write_text(_stable_svg_ids(buf.getvalue()), encoding="utf-8")
        else:
            fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path


def group_runs(
    runs: Sequence[Run], keys: Sequence[str], *, max_panels: int = MAX_PANELS
) -> tuple[list[Run], list[str]]:
    """One run per (run, group of the records' ``meta[keys]``) and its group label, for one
    reliability panel each: the group's records with the metric suite recomputed over them
    (the run's own policy and compat). UsageError when a run has no samples.jsonl or there
    would be more than ``max_panels`` panels (counted before anything is computed)."""
    keys = list(keys)
    grouped = []
    for run in runs:
        if not run.records:
            raise UsageError(f"{run.path}: --by needs the run's records (no samples.jsonl)")
        grouped.append((run, group_records(run.records, keys)))
    total = sum(len(g) for _, g in grouped)
    if total > max_panels:
        counts = ", ".join(f"{run.label}: {len(g)}" for run, g in grouped[:4])
        raise UsageError(
            f"--by {','.join(keys)} gives {total} panels ({counts}{', …' if len(grouped) > 4 else ''}"
            f"), more than {max_panels}; choose coarser meta fields or fewer runs "
            "(--task, --model), or see every group's numbers with calbench score --by"
        )
    out_runs, labels = [], []
    for run, groups in grouped:
        policy = str(run.summary.get("policy") or run.manifest.get("policy") or "drop")
        compat = run.summary.get("compat") or run.manifest.get("compat")
        for label, recs in groups.items():
            summary = summarize_records(recs, policy=policy, compat=compat)
            out_runs.append(
                Run(
                    path=run.path,
                    manifest=run.manifest,
                    summary=summary,
                    recomputed=True,
                    _records=recs,
                )
            )
            labels.append(label)
    return out_runs, labels


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

"""Reliability diagrams: *where* a model is miscalibrated.

Each bar is the accuracy of the answers whose stated confidence fell in that bin; the shaded gap
between a bar and the diagonal is the miscalibration there (red: more confident than accurate;
gold: less). The smooth-ECE curve (kernel-smoothed accuracy as a function of confidence, with its
bootstrap band) does the same without bin edges. Underneath, the histogram of stated confidences
shows how much data each region rests on — verbalized confidences pile up on a few round values
(0.9, 0.95, 1.0), and a bar built on three answers says little.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Sequence

import matplotlib as mpl
from matplotlib import patheffects
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from calbench.core.errors import UsageError
from calbench.core.runs import Run
from calbench.report.plot_style import PALETTE, RC_PARAMS, fmt_ci, new_figure

BAR = "#8FB0DA"
BAR_EDGE = "#2F5D95"
OVER = "#D62728"  # confidence above accuracy
UNDER = "#C99400"  # confidence below accuracy
OVER_FILL = "#F6CDCD"  # light, opaque versions: the hatch lines carry the saturated colour
UNDER_FILL = "#FAEBC2"
CURVE = "#1A1A1A"
XLIM = (-0.01, 1.015)  # a little room so bars at 0 and 1 are not cut by the axes


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
    ``groups`` (grid only): a label per run, shown in its panel's title (see
    :func:`calbench.report.plot_groups.group_runs`)."""
    if not runs:
        raise UsageError("no runs to plot")
    if groups is not None and (len(groups) != len(runs) or layout != "grid"):
        raise UsageError("group labels need the grid layout and one label per run")
    with mpl.rc_context(RC_PARAMS):
        if layout == "overlay" and len(runs) > 1:
            return _reliability_overlay(runs)
        cols = min(3, len(runs))
        rows = math.ceil(len(runs) / cols)
        fig = new_figure(4.2 * cols, 5.3 * rows + 0.5)
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
    fig = new_figure(6.4, 7.2)
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

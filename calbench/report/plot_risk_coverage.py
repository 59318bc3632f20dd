"""Risk–coverage plots: how the error rate among the answers a model keeps falls as it abstains
on its least confident ones (selective prediction), one line per run with its AURC."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib as mpl

from calbench.core.errors import UsageError
from calbench.core.runs import Run
from calbench.report.plot_style import PALETTE, RC_PARAMS, fmt_ci, new_figure


def risk_coverage_figure(runs: Sequence[Run]):
    """Selective risk (error rate among the answers kept) against coverage (share kept, most
    confident first), one line per run, AURC ± CI in the legend."""
    if not runs:
        raise UsageError("no runs to plot")
    with mpl.rc_context(RC_PARAMS):
        fig = new_figure(6.4, 4.6 + 0.35 * math.ceil(len(runs) / 2))
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

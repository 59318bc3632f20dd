"""What every calbench figure shares: the matplotlib settings (:data:`RC_PARAMS`), the colours
of runs drawn together, value-and-CI labels (:func:`fmt_ci`), and writing a figure to a PNG or SVG
file that stays byte-identical when the picture does not change (:func:`save_figure`).

Figures are built with matplotlib's object API (``Figure``, Agg canvas) so no GUI backend or
pyplot global state is touched.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from calbench.core.errors import UsageError

FORMATS = (".png", ".svg")

# Colour-blind-safe (Okabe–Ito) palette for runs drawn together.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

# Reproducible files: the committed leaderboard/ must not change when nothing changed.
RC_PARAMS = {
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


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches with constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


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
    with mpl.rc_context(RC_PARAMS):
        if path.suffix.lower() == ".svg":
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
            path.write_text(_stable_svg_ids(buf.getvalue()), encoding="utf-8")
        else:
            fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path

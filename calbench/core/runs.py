"""Find and load calbench run folders (shared by ``calbench plot`` and ``calbench leaderboard``).

A run folder holds ``samples.jsonl``, ``metrics.json`` (the output of
:func:`calbench.metrics.summarize`) and ``manifest.json`` (model, task, elicitation, n, ...).
Reports read ``metrics.json``; when it is missing, or lacks a field a report needs (an older
calbench wrote it), the summary is recomputed from ``samples.jsonl`` with the same policy, so a
report never shows numbers that no longer match the records. Loading a run checks every record of
its ``samples.jsonl`` with :func:`calbench.core.records.read_samples` before any report is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calbench.core.errors import UsageError
from calbench.core.records import read_samples

SAMPLES = "samples.jsonl"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
MAX_NAME = 80  # characters of a readable name kept in a folder name
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")

# What the reports read from a summary; a metrics.json without one of these is recomputed.
REPORT_METRICS = (
    "accuracy",
    "ece",
    "smooth_ece",
    "brier",
    "brier_rel",
    "brier_res",
    "auroc",
    "aurc",
)
REPORT_SECTIONS = ("reliability", "smooth_curve", "risk_coverage")


@dataclass
class Run:
    """One evaluated (model, task, elicitation) run, as read from its folder."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    recomputed: bool = False  # True when ``summary`` came from samples.jsonl, not metrics.json
    _records: list[dict] | None = field(default=None, repr=False)
    _by_policy: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> str:
        # A manifest may lack the display name (hand-made runs); the folder names are what the
        # user chose, so they are the least surprising fallback.
        return str(self.manifest.get("model") or self.path.parent.name or self.path.name)

    @property
    def task(self) -> str:
        return str(self.manifest.get("task") or self._record_field("task") or "unknown")

    @property
    def elicitation(self) -> str:
        return str(self.manifest.get("elicitation") or self._record_field("elicitation") or "-")

    @property
    def n(self) -> int:
        n = self.summary.get("n", self.manifest.get("n"))
        return int(n) if n is not None else 0

    @property
    def status(self) -> str | None:
        """The manifest's ``status`` (``calbench eval`` writes ``running``, then ``complete``);
        None when the manifest does not say (hand-made runs)."""
        s = self.manifest.get("status")
        return None if s is None else str(s)

    @property
    def label(self) -> str:
        return f"{self.model} · {self.task} · {self.elicitation}"

    def metric(self, name: str) -> dict[str, float | None]:
        """``{"value", "lo", "hi"}`` of a metric; all None when the summary has no such metric."""
        m = (self.summary.get("metrics") or {}).get(name)
        if not isinstance(m, dict):
            return {"value": None, "lo": None, "hi": None}
        return {k: _finite_or_none(m.get(k)) for k in ("value", "lo", "hi")}

    def reason(self, name: str) -> str | None:
        """Why a metric is undefined (the summary's ``reasons``), if it says."""
        reasons = self.summary.get("reasons") or {}
        r = reasons.get(name)
        return str(r) if r is not None else None

    @property
    def records(self) -> list[dict] | None:
        """The records of ``samples.jsonl`` (read once), or None when the run has none."""
        if self._records is None:
            p = self.path / SAMPLES
            if not p.is_file():
                return None
            self._records = read_samples(p)
        return self._records

    def confidences(self) -> list[float]:
        """Parsed confidences of the run (unparsed ones left out), for histograms."""
        recs = self.records
        if recs is None:
            return []
        return [
            float(r["confidence"]) for r in recs if _finite_or_none(r["confidence"]) is not None
        ]

    def summary_under(self, policy: str) -> dict[str, Any] | None:
        """The metric suite under unparsed-confidence ``policy`` (no compat mode, so every run
        is scored alike): ``summary`` itself when it was made that way or when no confidence is
        unparsed (then every policy scores the same records), else recomputed from the records
        with the summary's bootstrap seed and size. None when that needs records the run lacks."""
        if policy not in self._by_policy:
            same_choices = not self.summary.get("compat") and not missing_fields(self.summary)
            all_parsed = self.summary.get("coverage") == 1.0
            if same_choices and (self.summary.get("policy", "drop") == policy or all_parsed):
                self._by_policy[policy] = self.summary
            elif not self.records:
                self._by_policy[policy] = None
            else:
                ci = self.summary.get("ci") or {}
                self._by_policy[policy] = summarize_records(
                    self.records,
                    policy=policy,
                    n_bootstrap=int(ci.get("n_bootstrap", 1000)),
                    seed=int(ci.get("seed", 0)),
                )
        return self._by_policy[policy]

    def question_ids(self) -> frozenset[str] | None:
        """The ids of the run's records as text (the metrics compare ids so), or None when the
        run has no samples.jsonl."""
        recs = self.records
        return None if recs is None else frozenset(str(r["id"]) for r in recs)

    def _record_field(self, key: str) -> str | None:
        recs = self.records
        if recs:
            v = recs[0].get(key)
            return str(v) if v is not None else None
        return None


def _finite_or_none(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None if x is None else float(x)
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def safe_component(name: str) -> str:
    """``name`` as one safe folder name (of a run folder's path); unchanged when it already is
    one, else the readable part (unsafe characters and leading dots as ``_``, at most MAX_NAME
    characters) plus ``-`` and 8 hex digits of SHA-256(name), so two names never share a folder
    and no name climbs out of (``..``) or hides in (``.x``) the results folder."""
    safe = "".join(c if c in _SAFE else "_" for c in name)
    stripped = safe.lstrip(".")
    safe = "_" * (len(safe) - len(stripped)) + stripped
    if safe == name and 0 < len(name) <= MAX_NAME:
        return name
    return f"{safe[:MAX_NAME] or '_'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / SAMPLES).is_file() or (path / METRICS).is_file())


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders named by ``paths``: each path is a run folder or a folder searched
    recursively for run folders. Sorted, without duplicates; UsageError when a path does not
    exist or holds no run."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        if is_run_dir(p):
            found.append(p)
            continue
        if not p.is_dir():
            raise UsageError(f"{p}: not a run folder (expected {SAMPLES} or {METRICS} inside)")
        inner = sorted(
            {q.parent for name in (SAMPLES, METRICS) for q in p.rglob(name) if is_run_dir(q.parent)}
        )
        # Skip hidden folders (.git, .ipynb_checkpoints) that happen to contain copies.
        inner = [
            q for q in inner if not any(part.startswith(".") for part in q.relative_to(p).parts)
        ]
        if not inner:
            raise UsageError(f"{p}: no run folders found (folders holding {SAMPLES} or {METRICS})")
        found.extend(inner)
    seen: set[Path] = set()
    out = []
    for q in found:
        r = q.resolve()
        if r not in seen:
            seen.add(r)
            out.append(q)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return obj


def missing_fields(summary: dict[str, Any]) -> list[str]:
    """The report fields a summary lacks (empty when it is complete enough to draw and rank)."""
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        return ["metrics"]
    missing = [m for m in REPORT_METRICS if m not in metrics]
    missing += [s for s in REPORT_SECTIONS if not isinstance(summary.get(s), dict)]
    return missing


def summarize_records(records: list[dict], *, policy: str = "drop", **kwargs: Any) -> dict:
    """The metric suite of ``records`` via :func:`calbench.metrics.summarize`."""
    # lazy: calbench.metrics (scipy) +0.7-1.9 s at import, even after matplotlib's numpy (python
    # -X importtime); `calbench plot` draws from metrics.json and recomputes only a stale one
    from calbench.metrics import summarize

    correct = [bool(r["correct"]) for r in records]
    conf = [_finite_or_none(r["confidence"]) for r in records]
    ids = [str(r["id"]) for r in records]
    return summarize(correct, conf, policy=policy, ids=ids, **kwargs)


def load_run(path: str | os.PathLike, *, recompute: bool = False) -> Run:
    """Load one run folder. The summary is ``metrics.json`` unless it is missing or incomplete
    (or ``recompute``), in which case it is computed from ``samples.jsonl``."""
    path = Path(path)
    manifest = _read_json(path / MANIFEST) if (path / MANIFEST).is_file() else {}
    summary: dict[str, Any] = {}
    if (path / METRICS).is_file():
        summary = _read_json(path / METRICS)
    run = Run(path=path, manifest=manifest, summary=summary)
    run.records  # noqa: B018 -- read and check every record now, before anything is written
    missing = missing_fields(summary)
    if recompute or missing:
        if run.records is None:
            raise UsageError(
                f"{path}: {METRICS} lacks {', '.join(missing)} and there is no {SAMPLES} "
                "to recompute it from"
            )
        if not run.records:
            raise UsageError(f"{path}: {SAMPLES} holds no records")
        # Recompute under the choices the saved summary was made with, so numbers stay comparable.
        policy = str(summary.get("policy") or manifest.get("policy") or "drop")
        compat = summary.get("compat") or manifest.get("compat")
        run.summary = summarize_records(run.records, policy=policy, compat=compat)
        run.recomputed = True
        if summary and not recompute:
            print(
                f"calbench: {path}: {METRICS} lacks {', '.join(missing)}; "
                f"recomputed from {SAMPLES}",
                file=sys.stderr,
            )
    return run


def load_runs(paths: Iterable[str | os.PathLike], *, recompute: bool = False) -> list[Run]:
    return [load_run(p, recompute=recompute) for p in find_run_dirs(paths)]


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n — used for the parse rate, which the
    bootstrap summary does not carry; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; the formula reaches it only up to rounding.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def parse_rate(run: Run) -> dict[str, float | None]:
    """Share of records with a parsed confidence, with its 95% Wilson CI. Read from the
    summary's ``n_scored``/``n`` (under the drop policy these are the records with a
    confidence), else counted in ``samples.jsonl``."""
    n = run.summary.get("n")
    if run.records is not None:
        n = len(run.records)
        k = sum(1 for r in run.records if _finite_or_none(r["confidence"]) is not None)
    elif n is not None and run.summary.get("coverage") is not None:
        k = round(float(run.summary["coverage"]) * int(n))
    else:
        return {"value": None, "lo": None, "hi": None}
    n = int(n)
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else None, "lo": lo, "hi": hi}

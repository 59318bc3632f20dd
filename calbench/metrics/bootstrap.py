"""Bootstrap confidence intervals and the paired bootstrap of a difference between two runs.

Resampling is vectorised: a resample of n records is a row of counts over the run's atoms (see
:mod:`calbench.metrics.engine`), drawn for a block of resamples at once, either as a multinomial
draw over the atoms (when there are few, as with verbalized confidences) or as an (R, n) matrix of
random record indices folded into counts with one bincount. Both are the ordinary nonparametric
bootstrap (records drawn with replacement, n per resample); intervals are percentile intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import scipy.sparse

from calbench.metrics import engine
from calbench.metrics.inputs import MetricInputError, as_conf, as_correct, int_param, real_param

N_BOOTSTRAP = 1000
LEVEL = 0.95
_MAX_CELLS = 4_000_000  # per block of resamples: rows x max(atoms, n) numbers


def resample_counts(
    labels: np.ndarray,
    n_labels: int,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    max_cells: int = _MAX_CELLS,
) -> Iterator[np.ndarray]:
    """Yield blocks of bootstrap resamples as (rows, n_labels) float arrays of counts: how many
    times each label is drawn when n records (with these labels) are drawn with replacement."""
    if n_bootstrap < 1:
        return
    rng = np.random.default_rng(seed)
    n = labels.size
    freq = np.bincount(labels, minlength=n_labels)
    present = np.flatnonzero(freq)
    # Few distinct labels: draw their counts directly (cost ~ labels, not records per resample).
    multinomial = present.size * 16 <= n
    width = present.size if multinomial else max(n, n_labels)
    block = max(1, min(n_bootstrap, max_cells // max(width, 1)))
    p = freq[present] / n
    for start in range(0, n_bootstrap, block):
        rows = min(block, n_bootstrap - start)
        if multinomial:
            out = np.zeros((rows, n_labels))
            out[:, present] = rng.multinomial(n, p, size=rows)
        else:
            idx = rng.integers(0, n, size=(rows, n), dtype=np.int64 if n > 2**31 - 1 else np.int32)
            flat = labels[idx] + n_labels * np.arange(rows)[:, None]
            out = np.bincount(flat.ravel(), minlength=rows * n_labels).reshape(rows, n_labels)
            out = out.astype(np.float64)
        yield out


def percentile_ci(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; NaN replicates (metric undefined in that
    resample) are left out; (nan, nan) when none is defined."""
    reps = np.asarray(reps, dtype=np.float64)
    ok = reps[~np.isnan(reps)]
    if ok.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(ok, [a, 100 - a])
    return float(lo), float(hi)


def _check_metric(metric) -> None:
    if not callable(metric) and metric not in engine.METRICS:
        raise MetricInputError(
            f"unknown metric {metric!r}; one of {', '.join(engine.METRICS)} or a callable"
        )


def check_resampling(n_bootstrap, seed, level=LEVEL, minimum: int = 1) -> tuple[int, int, float]:
    """Validated (n_bootstrap, seed, level): n_bootstrap an int >= ``minimum``, seed an int >= 0,
    level in (0, 1)."""
    return (
        int_param("n_bootstrap", n_bootstrap, minimum),
        int_param("seed", seed, 0),
        real_param("level", level, 0, 1, lo_open=True, hi_open=True),
    )


def bootstrap_ci(
    correct,
    conf,
    metric: str | Callable = "ece",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
    policy: str = "drop",
    compat: str | None = None,
) -> dict:
    """Percentile bootstrap CI of one metric: {"value", "lo", "hi", "n_bootstrap", "level"}.

    ``metric`` is a suite name (vectorised) or any callable ``f(correct, conf) -> float`` (called
    once per resample on the policy-applied records).
    """
    _check_metric(metric)
    n_bootstrap, seed, level = check_resampling(n_bootstrap, seed, level)
    if callable(metric):
        y, c = engine.apply_policy(correct, conf, policy)
        if y.size == 0:
            raise MetricInputError("no records with a parsed confidence to score")
        value = float(metric(y, c))
        reps = _loop(lambda idx: float(metric(y[idx], c[idx])), y.size, n_bootstrap, seed)
    else:
        prep = engine.prepare(correct, conf, policy, compat)
        value = float(engine.metric_rows(prep, prep.counts(), [metric])[metric][0])
        reps = np.concatenate(
            [
                engine.metric_rows(prep, block, [metric])[metric]
                for block in resample_counts(prep.labels, prep.n_atoms, n_bootstrap, seed)
            ]
        )
    lo, hi = percentile_ci(reps, level)
    return {"value": value, "lo": lo, "hi": hi, "n_bootstrap": n_bootstrap, "level": level}


def _loop(fn, n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([fn(rng.integers(0, n, size=n)) for _ in range(n_bootstrap)])


def paired_bootstrap(
    correct_a,
    conf_a,
    correct_b,
    conf_b,
    metric: str | Callable = "ece",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
    policy: str = "drop",
    compat: str | None = None,
) -> dict:
    """Paired bootstrap of metric(a) - metric(b) for two runs on the same items.

    The arrays must be aligned (index i is the same question in both runs; see
    :func:`align_records`). Each resample draws item indices once and scores both runs on them, so
    the interval accounts for the item-level correlation of the two runs (which makes it much
    narrower than comparing two separate CIs). Returns {"metric", "n", "a", "b", "diff", "lo",
    "hi", "p_value", "n_bootstrap", "level"}; ``p_value`` is the two-sided bootstrap p-value
    2 min(P*(diff <= 0), P*(diff >= 0)), an approximation, capped at 1.
    """
    _check_metric(metric)
    n_bootstrap, seed, level = check_resampling(n_bootstrap, seed, level)
    ya, yb = as_correct(correct_a), as_correct(correct_b)
    ca, cb = as_conf(conf_a, allow_missing=True), as_conf(conf_b, allow_missing=True)
    n = ya.size
    if not (yb.size == n and ca.size == n and cb.size == n):
        raise MetricInputError(
            f"paired bootstrap needs aligned arrays of one length; got {ya.size}, {ca.size}, "
            f"{yb.size}, {cb.size} (align two runs on their ids with align_records)"
        )
    if n == 0:
        raise MetricInputError("no shared items (n = 0)")
    if callable(metric):
        fill = engine.parse_policy(policy)

        def scored(y: np.ndarray, c: np.ndarray, idx) -> tuple[np.ndarray, np.ndarray]:
            y, c = y[idx], c[idx]
            missing = np.isnan(c)
            return (y[~missing], c[~missing]) if fill is None else (y, np.where(missing, fill, c))

        def score(idx) -> float:
            return float(metric(*scored(ya, ca, idx))) - float(metric(*scored(yb, cb, idx)))

        a = float(metric(*scored(ya, ca, slice(None))))
        b = float(metric(*scored(yb, cb, slice(None))))
        diffs = _loop(score, n, n_bootstrap, seed)
    else:
        pa = engine.prepare(ya, ca, policy, compat)
        pb = engine.prepare(yb, cb, policy, compat)
        a = float(engine.metric_rows(pa, pa.counts(), [metric])[metric][0])
        b = float(engine.metric_rows(pb, pb.counts(), [metric])[metric][0])
        # resample pairs (atom in a, atom in b) of the same item together
        joint, inverse = np.unique(pa.labels * pb.n_atoms + pb.labels, return_inverse=True)
        to_a = _onehot(joint // pb.n_atoms, pa.n_atoms)
        to_b = _onehot(joint % pb.n_atoms, pb.n_atoms)
        parts = []
        for block in resample_counts(inverse.ravel(), joint.size, n_bootstrap, seed):
            ra = engine.metric_rows(pa, np.asarray(block @ to_a), [metric])[metric]
            rb = engine.metric_rows(pb, np.asarray(block @ to_b), [metric])[metric]
            parts.append(ra - rb)
        diffs = np.concatenate(parts)
    lo, hi = percentile_ci(diffs, level)
    ok = diffs[~np.isnan(diffs)]
    p = min(1.0, 2 * min(np.mean(ok <= 0), np.mean(ok >= 0))) if ok.size else float("nan")
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    return {
        "metric": name,
        "n": n,
        "a": a,
        "b": b,
        "diff": a - b,
        "lo": lo,
        "hi": hi,
        "p_value": float(p),
        "n_bootstrap": n_bootstrap,
        "level": level,
    }


def _onehot(cols: np.ndarray, width: int) -> scipy.sparse.csr_matrix:
    rows = np.arange(cols.size)
    return scipy.sparse.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(cols.size, width))


def align_records(records_a: Sequence[dict], records_b: Sequence[dict]) -> dict:
    """Align two runs' records on their shared ``id``s (in the order of ``records_a``).

    Returns {"ids", "correct_a", "conf_a", "correct_b", "conf_b", "only_a", "only_b"}, confidences
    as float arrays with NaN for unparsed; a run with a repeated id is an error (pairing would be
    ambiguous).
    """

    def index(records: Sequence[dict], which: str) -> dict:
        out: dict = {}
        for r in records:
            key = r["id"]
            if key in out:
                raise MetricInputError(f"run {which} has id {key!r} more than once")
            out[key] = r
        return out

    ia, ib = index(records_a, "a"), index(records_b, "b")
    ids = [k for k in ia if k in ib]

    def conf(r: dict) -> float:
        return np.nan if r.get("confidence") is None else float(r["confidence"])

    return {
        "ids": ids,
        "correct_a": np.array([float(ia[k]["correct"]) for k in ids]),
        "conf_a": np.array([conf(ia[k]) for k in ids]),
        "correct_b": np.array([float(ib[k]["correct"]) for k in ids]),
        "conf_b": np.array([conf(ib[k]) for k in ids]),
        "only_a": [k for k in ia if k not in ib],
        "only_b": [k for k in ib if k not in ia],
    }

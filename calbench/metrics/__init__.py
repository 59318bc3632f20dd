"""Calibration metrics for (correct, confidence) pairs: pure numpy functions ``f(correct, conf)``,
each with its formula in the docstring, plus bootstrap CIs and ``summarize`` (the whole suite).

``correct``: 1/True for a right answer, 0/False for a wrong one. ``conf``: the stated probability
of being right, in [0, 1]. Metric functions reject NaN (an unparsed confidence): choose a policy
with :func:`apply_policy`, or let :func:`summarize` do it.
"""

from calbench.metrics.binning import debiased_ce, ece, mce, reliability_bins, rms_ce
from calbench.metrics.bootstrap import align_records, bootstrap_ci, paired_bootstrap
from calbench.metrics.engine import METRICS, POLICIES, apply_policy
from calbench.metrics.inputs import MetricInputError, UndefinedMetricWarning
from calbench.metrics.scoring_rules import (
    accuracy,
    brier,
    brier_decomposition,
    mean_confidence,
    nll,
    overconfidence_rate,
)
from calbench.metrics.selective import (
    auprc,
    aurc,
    auroc,
    excess_aurc,
    risk_coverage,
    selective_accuracy,
)
from calbench.metrics.smooth import smooth_calibration_curve, smooth_ece, smooth_ece_sigma
from calbench.metrics.suite import HEADLINE, headline, summarize

__all__ = [
    "HEADLINE",
    "METRICS",
    "POLICIES",
    "MetricInputError",
    "UndefinedMetricWarning",
    "accuracy",
    "align_records",
    "apply_policy",
    "auprc",
    "auroc",
    "aurc",
    "bootstrap_ci",
    "brier",
    "brier_decomposition",
    "debiased_ce",
    "ece",
    "excess_aurc",
    "headline",
    "mce",
    "mean_confidence",
    "nll",
    "overconfidence_rate",
    "paired_bootstrap",
    "reliability_bins",
    "risk_coverage",
    "rms_ce",
    "selective_accuracy",
    "smooth_calibration_curve",
    "smooth_ece",
    "smooth_ece_sigma",
    "summarize",
]

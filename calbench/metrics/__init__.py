"""Calibration metrics for (correct, confidence) pairs: pure numpy functions ``f(correct, conf)``,
each with its formula in the docstring, plus bootstrap CIs and ``summarize`` (the whole suite).

``correct``: 1/True for a right answer, 0/False for a wrong one. ``conf``: the stated probability
of being right, in [0, 1]. Metric functions reject NaN (an unparsed confidence): choose a policy
with :func:`apply_policy`, or let :func:`summarize` do it. Post-hoc recalibration (temperature,
Platt, isotonic, histogram binning; cross-fitted or fitted on a calibration set) is in
:mod:`calbench.metrics.recalibration`.
"""

from calbench.metrics.binning import debiased_ce, ece, mce, reliability_bins, rms_ce
from calbench.metrics.bootstrap import align_records, bootstrap_ci, paired_bootstrap
from calbench.metrics.engine import METRICS, POLICIES, apply_policy
from calbench.metrics.inputs import MetricInputError, UndefinedMetricWarning
from calbench.metrics.recalibration import METHODS as RECALIBRATION_METHODS
from calbench.metrics.recalibration import apply as apply_recalibration
from calbench.metrics.recalibration import crossfit, crossfit_folds
from calbench.metrics.recalibration import fit as fit_recalibration
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
    "RECALIBRATION_METHODS",
    "MetricInputError",
    "UndefinedMetricWarning",
    "accuracy",
    "align_records",
    "apply_policy",
    "apply_recalibration",
    "auprc",
    "auroc",
    "aurc",
    "bootstrap_ci",
    "brier",
    "brier_decomposition",
    "crossfit",
    "crossfit_folds",
    "debiased_ce",
    "ece",
    "excess_aurc",
    "fit_recalibration",
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

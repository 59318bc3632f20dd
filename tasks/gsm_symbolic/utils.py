"""Hooks for the calbench_gsm_symbolic lm-eval task; the logic lives in the calbench package."""

from calbench.datasets import load_gsm_symbolic
from calbench.harness import make_docs, nanmean, process_results  # noqa: F401  (used by YAML)


def load_docs(elicitation="tags", size=500, seed=0, **kwargs):
    return make_docs(load_gsm_symbolic(size=size, seed=seed), elicitation=elicitation,
                     grader="math")

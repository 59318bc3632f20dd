"""Hooks for the calbench_gsm8k lm-eval task; the logic lives in the calbench package."""

from calbench.datasets import load_gsm8k
from calbench.harness import make_docs, nanmean, process_results  # noqa: F401  (used by YAML)


def load_docs(data_dir=None, elicitation="tags", split="test", **kwargs):
    return make_docs(load_gsm8k(data_dir, split=split), elicitation=elicitation, grader="math")

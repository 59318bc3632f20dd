"""lm-eval hooks shared by every calbench task YAML; the logic lives in calbench.eval.harness."""

from calbench.eval.harness import load_docs, nanmean, process_results  # noqa: F401  (YAML uses them)

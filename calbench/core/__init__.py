"""calbench's core: what every client (eval, report, train) needs, defined once.

- ``prompts``: the elicitation prompts; ``parse`` + ``grade`` + ``responses``: a response turned
  into (answer, correct, confidence) — the one contract evaluator and rewards share;
- ``records`` + ``runs``: the run-folder format (samples.jsonl, metrics.json, manifest.json),
  validated reading and atomic writes;
- ``loaders`` + ``chain_sum``: the task data; ``models``: resolving a model name to weights;
- ``calbench.metrics`` (its own package, public as ``calbench.metrics``) is core too.

Nothing here imports ``calbench.eval``, ``calbench.report`` or ``calbench.train``.
"""

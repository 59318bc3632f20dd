"""The report client: ``calbench score``, ``calbench plot``, ``calbench leaderboard``.

Reads run folders (core's ``runs``/``records``) and lm-eval sample files (``lmeval_import``),
computes metrics with ``calbench.metrics``, ranks (``ranking``) and draws (``plot_*``). Imports
core only; starts without torch.
"""

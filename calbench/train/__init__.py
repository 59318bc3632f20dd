"""A minimal RLCR trainer: calibration rewards, GRPO and PPO with LoRA, runnable on a CPU.

* :mod:`calbench.train.rewards` — TRL-style reward functions (``REWARDS``) and properness helpers.
* :mod:`calbench.train.grpo`, :mod:`calbench.train.ppo` — one file per algorithm, its config on
  top; :mod:`calbench.train.warmup` — the supervised format warm-up.
* What they share, one job per module: ``config`` (``RunConfig``), ``policy`` (device, dtype,
  tokenizer, LoRA, prompts), ``rollout`` (sampling answers), ``logprobs`` (response log-probs,
  the reference policy), ``credit`` (confidence tokens, group advantages), ``heldout`` (held-out
  evaluation), ``checkpoints`` (saving, RNG state, resume), ``training_run`` (``TrainingRun``: a
  run's setup, log, evaluations and checkpoints).
* :mod:`calbench.train.trl_support`, :mod:`calbench.train.verl_reward` — the same rewards at scale.

Importing this package is cheap; torch loads only with the trainer modules.
"""

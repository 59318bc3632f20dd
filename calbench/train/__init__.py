"""A minimal RLCR trainer: calibration rewards, GRPO and PPO with LoRA, runnable on a CPU.

* :mod:`calbench.train.rewards` — TRL-style reward functions (``REWARDS``) and properness helpers.
* :mod:`calbench.train.grpo`, :mod:`calbench.train.ppo` — one file per algorithm.
* :mod:`calbench.train.warmup` — the supervised format warm-up.
* :mod:`calbench.core.chain_sum` — the ``chain_sum`` train / held-out splits.
* :mod:`calbench.train.trl_support`, :mod:`calbench.train.verl_reward` — the same rewards at scale.

Importing this package is cheap; torch loads only with the trainer modules.
"""

"""``calbench train``: RLCR-style training of a model's answers and verbalized confidences.

    calbench train --method warmup --model smollm2-135m --out runs/warmup
    calbench train --method rlcr --algo grpo --model runs/warmup/adapter --out runs/rlcr-grpo

Every hyperparameter is a field of the config dataclass at the top of ``grpo.py``, ``ppo.py`` or
``warmup.py``; the common ones have flags, any other can be set with ``--set name=value``. Running
the same command again after a kill resumes from the last checkpoint in ``--out``.

This module imports nothing heavy at import time (the CLI builds every subcommand's parser).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from calbench.core.errors import UsageError
from calbench.train.rewards import METHODS as REWARD_METHODS

# the rewards (one source: rewards.METHODS) plus the supervised warm-up
METHODS = (*REWARD_METHODS, "warmup")
ALGOS = ("grpo", "ppo")

# flag -> (config field, type, help). Defaults come from the chosen config dataclass.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--steps", "steps", int, "optimizer steps (RL)"),
    ("--lr", "lr", float, "learning rate"),
    ("--seed", "seed", int, "run seed (data split, sampling, init)"),
    ("--prompts-per-step", "prompts_per_step", int, "questions per RL step"),
    ("--group-size", "group_size", int, "samples per question (GRPO group size G)"),
    ("--max-new-tokens", "max_new_tokens", int, "response token budget"),
    ("--temperature", "temperature", float, "sampling temperature for rollouts"),
    ("--format-weight", "format_weight", float, "reward for tags present + parseable confidence"),
    ("--adv-norm", "adv_norm", str, "GRPO advantage normalisation: mean | std"),
    ("--std-floor", "std_floor", float, "GRPO: floor on the group std when --adv-norm std"),
    ("--beta", "beta", float, "GRPO: KL(π‖π_ref) weight"),
    ("--kl-coef", "kl_coef", float, "PPO: per-token KL penalty in the reward"),
    ("--clip-eps", "clip_eps", float, "ε of the clipped surrogate"),
    ("--updates-per-batch", "updates_per_batch", int, "GRPO: optimizer steps per rollout batch"),
    ("--ppo-epochs", "ppo_epochs", int, "PPO: epochs over each rollout batch"),
    ("--minibatches", "minibatches", int, "PPO: minibatches per epoch"),
    ("--micro-batch", "micro_batch", int, "GRPO: questions per forward/backward chunk"),
    (
        "--conf-grad",
        "conf_grad",
        str,
        "GRPO: confidence digit credit: sampled | expected (exact over the ten digits)",
    ),
    ("--conf-weight", "conf_weight", float, "GRPO: λ, weight of the exact confidence-digit term"),
    (
        "--conf-entropy",
        "conf_entropy",
        float,
        "GRPO: τ, entropy bonus on the confidence digit (with --conf-grad expected)",
    ),
    ("--train-order", "train_order", str, "RL questions: stream | stratified (bins take turns)"),
    ("--lora-r", "lora_r", int, "LoRA rank"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha"),
    ("--lora-last-layers", "lora_last_layers", int, "LoRA on the last N layers only (0: all)"),
    ("--elicitation", "elicitation", str, "prompt format (as in calbench eval): tags | prefill"),
    ("--eval-every", "eval_every", int, "steps between held-out evaluations (0: start/end)"),
    ("--eval-size", "eval_size", int, "held-out questions per evaluation"),
    (
        "--eval-split",
        "eval_split",
        str,
        "held-out questions: test (the eval task's pool) | val (train stream far from RL)",
    ),
    ("--save-every", "save_every", int, "steps between checkpoints"),
    ("--device", "device", str, "auto | cpu | cuda | cuda:N"),
    ("--dtype", "dtype", str, "auto | fp32 | bf16 (autocast and rollout copy)"),
    ("--threads", "threads", int, "torch CPU threads (0: torch default)"),
    ("--examples", "examples", int, "warm-up: supervised examples"),
    ("--epochs", "epochs", int, "warm-up: epochs"),
    ("--batch-size", "batch_size", int, "warm-up: batch size"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        required=True,
        choices=METHODS,
        help="reward (rlcr = correctness + Brier, calbench's default), or "
        "'warmup' for the supervised format stage",
    )
    parser.add_argument("--algo", default="grpo", choices=ALGOS, help="RL algorithm")
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="alias, HF folder, or a PEFT adapter folder to continue training "
        "(e.g. the warm-up's runs/warmup/adapter)",
    )
    parser.add_argument(
        "--out",
        dest="out_dir",
        default=None,
        help="run folder (default runs/train/<method>-<algo>); rerunning into a "
        "folder with a checkpoint resumes",
    )
    parser.add_argument(
        "--full-finetune",
        action="store_true",
        default=None,
        help="train every weight instead of a LoRA adapter",
    )
    parser.add_argument(
        "--no-split-credit",
        dest="split_credit",
        action="store_false",
        default=None,
        help="one sequence-level advantage for all tokens",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="discard a checkpoint and log already in --out"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any config field (repeatable)",
    )
    for flag, dest, typ, help_ in _FLAGS:
        parser.add_argument(flag, dest=dest, type=typ, default=None, help=help_)


def config_class(method: str, algo: str) -> type:
    if method == "warmup":
        from calbench.train.warmup import WarmupConfig

        return WarmupConfig
    if algo == "ppo":
        from calbench.train.ppo import PPOConfig

        return PPOConfig
    from calbench.train.grpo import GRPOConfig

    return GRPOConfig


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"expected a boolean, got {value!r}")
    try:
        return type(like)(value)
    except (TypeError, ValueError):
        raise UsageError(f"cannot read {value!r} as {type(like).__name__}") from None


def build_config(args: argparse.Namespace) -> Any:
    """The algorithm's config dataclass from parsed arguments (unset flags keep its defaults)."""
    cls = config_class(args.method, args.algo)
    defaults = cls()
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for name in names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise UsageError(
                f"--set {key}: {cls.__name__} has no such field; fields: {', '.join(sorted(names))}"
            )
        values[key] = _coerce(raw, getattr(defaults, key))
    if args.method != "warmup":
        values["method"] = args.method
    values.setdefault(
        "out_dir",
        f"runs/train/{args.method}" + ("" if args.method == "warmup" else f"-{args.algo}"),
    )
    cfg = cls(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: Any) -> None:
    if cfg.elicitation not in ("tags", "prefill"):
        raise UsageError("--elicitation must be tags or prefill")
    if getattr(cfg, "adv_norm", "mean") not in ("mean", "std"):
        raise UsageError("--adv-norm must be mean or std")
    if getattr(cfg, "loss_agg", "token") not in ("token", "sequence"):
        raise UsageError("loss_agg must be token or sequence")
    if hasattr(cfg, "conf_grad"):
        from calbench.train.grpo import CONF_GRADS  # the one list grpo.train also checks

        if cfg.conf_grad not in CONF_GRADS:
            raise UsageError(f"--conf-grad must be one of {', '.join(CONF_GRADS)}")
    if getattr(cfg, "conf_weight", 1.0) < 0:
        raise UsageError("--conf-weight must be >= 0")
    if getattr(cfg, "conf_entropy", 0.0) < 0:
        raise UsageError("--conf-entropy must be >= 0")
    if getattr(cfg, "conf_entropy", 0.0) > 0 and getattr(cfg, "conf_grad", "") != "expected":
        raise UsageError("--conf-entropy needs --conf-grad expected (it acts on the exact term)")
    for name in (
        "steps",
        "prompts_per_step",
        "group_size",
        "max_new_tokens",
        "examples",
        "epochs",
        "batch_size",
        "ppo_epochs",
        "minibatches",
        "updates_per_batch",
    ):
        if hasattr(cfg, name) and getattr(cfg, name) < 1:
            raise UsageError(f"{name} must be >= 1")
    if getattr(cfg, "group_size", 2) < 2 and cfg.__class__.__name__ == "GRPOConfig":
        raise UsageError("GRPO needs --group-size >= 2 (advantages are relative to the group)")
    if cfg.eval_split not in ("test", "val"):
        raise UsageError(f"--eval-split must be test or val, not {cfg.eval_split!r}")
    if cfg.eval_size > 500 and cfg.eval_split == "test":
        raise UsageError("--eval-size: the chain_sum test split has 500 items per seed")


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if args.method == "warmup":
        from calbench.train.warmup import train
    elif args.algo == "ppo":
        from calbench.train.ppo import train
    else:
        from calbench.train.grpo import train
    result = train(cfg, overwrite=args.overwrite)
    summary = {
        "model_dir": str(result.model_dir),
        "log": str(result.out_dir / "log.jsonl"),
        "steps": result.steps,
        "wall_s": round(result.wall_s, 1),
    }
    if result.final_eval:
        summary["final_eval"] = {
            k: v
            for k, v in result.final_eval.items()
            if k.startswith("eval_") and k != "eval_by_bin"
        }
    print(json.dumps(summary, indent=2, default=str))
    print(f"evaluate with: calbench eval --model {result.model_dir}", file=sys.stderr)
    return 0

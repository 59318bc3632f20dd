"""The run configuration every training stage shares; ``grpo.py``, ``ppo.py`` and ``warmup.py``
extend it with their own hyperparameters (their config dataclass at the top of each file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class RunConfig:
    model: str = "smollm2-135m"  # --model spec: alias, HF folder, or a PEFT adapter to continue
    out_dir: str = "runs/train"
    method: str = "rlcr"  # reward: rlvr | rlcr | brier | log | asymmetric (see rewards.py)
    elicitation: str = "tags"  # prompt format, identical to `calbench eval --elicitation`
    steps: int = 50  # optimizer steps (RL) / ignored by the warm-up, which counts epochs
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    # LoRA (peft). full_finetune=True trains every weight instead.
    full_finetune: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"
    # LoRA on the last N decoder layers only (0: all). Backward then stops N layers deep: on a
    # slow CPU that is most of the step (30 layers in SmolLM2-135M).
    lora_last_layers: int = 0
    # RL questions: "stream" (reasoning-gym's order) or "stratified" (difficulty bins take turns,
    # so every step of 4k questions holds k of each bin; see chain_sum.stratified_train_items)
    train_order: str = "stream"
    # held-out evaluation, logging, checkpoints
    eval_every: int = 10  # steps between held-out evaluations (0: only at the start and end)
    eval_size: int = 64  # held-out questions (greedy decoding)
    eval_split: str = (
        "test"  # "test" (the eval task's held-out pool) | "val" (for choosing recipes)
    )
    save_every: int = 10  # steps between checkpoints (0: only at the end)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # autocast / rollout dtype: auto | fp32 | bf16
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    progress: bool = True  # rich progress bar

    def to_dict(self) -> dict:
        return asdict(self)

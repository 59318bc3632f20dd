"""One training run's bookkeeping, shared by GRPO, PPO and the warm-up: setup and resume, the
questions of each step, rollouts and their rewards, the optimizer step, the log, held-out
evaluations, checkpoints and the final model. The algorithm files own the math.

Folder layout: ``config.json``, ``log.jsonl`` (one line per step, plus ``"event": "eval"`` lines),
``checkpoint/`` (the latest: an adapter or model folder plus ``trainer_state.pt``), and at the end
``adapter/`` (LoRA) or ``model/`` (full fine-tuning), each with ``calbench_train.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import nn

from calbench.core.chain_sum import chain_sum_items, stratified_train_items
from calbench.core.errors import UsageError
from calbench.core.records import atomic_write_json
from calbench.train import heldout
from calbench.train.checkpoints import (
    TRAINER_STATE,
    check_resumable,
    checkpoint_dir,
    load_trainer_state,
    rng_state,
    run_info,
    save_model,
    save_trainer_state,
    seed_everything,
    set_rng_state,
    step_generator,
)
from calbench.train.logprobs import Reference
from calbench.train.policy import cpu_has_fast_bf16, load_policy, prefill_for
from calbench.train.rewards import reward_parts, score_completions
from calbench.train.rollout import Rollout, RolloutModel, rollout


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path  # the saved adapter (LoRA) or model (full fine-tuning)
    steps: int
    wall_s: float
    final_eval: dict[str, Any] | None


class TrainingRun:
    """Loads the policy, its rollout copy, the reference, the questions and (when ``out_dir``
    holds a checkpoint of the same run) the saved state. Each step the algorithm calls
    :meth:`batch`, :meth:`rollout`, :meth:`score`, its own math, :meth:`clip_and_step` and
    :meth:`log_step`, then :meth:`evaluate` and :meth:`save_checkpoint` when
    :meth:`is_eval_step` and :meth:`is_checkpoint_step` say so; :meth:`finish` saves the model."""

    def __init__(self, cfg: Any, algo: str, *, overwrite: bool = False):
        self.cfg, self.algo = cfg, algo
        self.out = Path(cfg.out_dir)
        if overwrite:
            for name in ("checkpoint", "log.jsonl", "adapter", "model"):
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        info = check_resumable(self.out, cfg, algo)
        seed_everything(cfg.seed)
        ckpt = checkpoint_dir(self.out)
        self.policy = load_policy(cfg, adapter_override=str(ckpt) if info else None)
        self.tok = self.policy.tokenizer
        self.prefill = prefill_for(cfg.elicitation)
        state = load_trainer_state(ckpt / TRAINER_STATE, self.policy.device) if info else None
        self.reference = Reference(self.policy, state.get("reference_lora") if state else None)
        self.rollout_model = RolloutModel(self.policy)
        self.extra: dict[str, nn.Module] = {}  # checkpointed beside the optimizer (PPO's critic)
        self.start_step = int(state["step"]) if state else 0
        self.wall_before = float(state.get("wall_s", 0.0)) if state else 0.0
        self._state = state
        n_train = cfg.steps * getattr(cfg, "prompts_per_step", 1)
        order = getattr(cfg, "train_order", "stream")
        if order == "stratified":
            self.train_items = stratified_train_items(n_train, cfg.seed)
        elif order == "stream":
            self.train_items = chain_sum_items("train", n_train, cfg.seed)
        else:
            raise UsageError(f"train_order must be 'stream' or 'stratified', not {order!r}")
        self.eval_items = (
            chain_sum_items(cfg.eval_split, cfg.eval_size, cfg.seed) if cfg.eval_size else []
        )
        self.log = JsonlLog(self.out / "log.jsonl")
        if state is None:  # no checkpoint: whatever a killed earlier attempt logged is void
            self.log.path.unlink(missing_ok=True)
        self.log.truncate_after(self.start_step)
        self.optimizer: torch.optim.Optimizer | None = None
        self.t0 = time.perf_counter()
        self.last_eval: dict[str, Any] | None = None
        if state:
            set_rng_state(state["rng"])
        atomic_write_json(self.out / "config.json", {"algo": algo, **cfg.to_dict()})

    # -- setup ---------------------------------------------------------------------------------

    def attach_optimizer(
        self, optimizer: torch.optim.Optimizer, extra: dict[str, nn.Module] | None = None
    ) -> None:
        """Register the optimizer and the modules besides the policy that it trains (saved in
        every checkpoint); on resume, restore their state."""
        self.optimizer = optimizer
        self.extra.update(extra or {})
        if self._state:
            optimizer.load_state_dict(self._state["optimizer"])
            for name, m in self.extra.items():
                m.load_state_dict(self._state["extra"][name])

    # -- per step ------------------------------------------------------------------------------

    def steps(self) -> Iterator[int]:
        """1-based steps still to run, with a rich progress bar (its info line shows the last
        log line: the step's reward, accuracy and confidence spread, or an evaluation)."""
        cfg = self.cfg
        with _progress_bar(cfg.progress) as bar:
            task = bar.add_task(
                f"{self.algo} {cfg.method}", total=cfg.steps, completed=self.start_step, info=""
            )
            for step in range(self.start_step + 1, cfg.steps + 1):
                yield step
                bar.update(task, completed=step, info=self._last_line())

    def batch(self, step: int) -> list[dict]:
        """The training questions of 1-based ``step`` (a fixed slice: resume-safe)."""
        b = self.cfg.prompts_per_step
        return self.train_items[(step - 1) * b : step * b]

    def rollout(self, items: Sequence[dict], step: int) -> Rollout:
        """``group_size`` sampled answers to each item, from the current weights."""
        cfg = self.cfg
        self.rollout_model.sync()
        return rollout(
            self.policy,
            self.rollout_model,
            [it["question"] for it in items],
            elicitation=cfg.elicitation,
            group=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            min_new_tokens=getattr(cfg, "min_new_tokens", 0),
            generator=step_generator(cfg.seed, step, self.policy.device),
        )

    def score(self, ro: Rollout, items: Sequence[dict]) -> tuple[list[Any], list[Any]]:
        """Each response graded (answer, correctness, confidence) and its reward's parts."""
        golds = [it["gold"] for it in items for _ in range(ro.group)]
        scored = score_completions(ro.completions, golds, prefill=self.prefill)
        return scored, reward_parts(self.cfg.method, scored, self.cfg.format_weight)

    def clip_and_step(self, params: Sequence[nn.Parameter]) -> float:
        """Clip the gradient norm to ``max_grad_norm``, step, zero; returns the norm before."""
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        assert self.optimizer is not None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def log_step(self, step: int, stats: dict[str, Any]) -> None:
        self.log.write({"step": step, "wall_s": round(self.wall_s(), 2), **stats})

    def is_eval_step(self, step: int) -> bool:
        """Whether a held-out evaluation follows ``step`` (0: before the first): at the start,
        every ``eval_every`` steps and at the end, when there are held-out items."""
        e = self.cfg.eval_every
        return bool(self.eval_items) and (step in (0, self.cfg.steps) or (e > 0 and step % e == 0))

    def evaluate(self, step: int) -> dict[str, Any]:
        """Greedy answers to the held-out items, scored; logged as an ``eval`` event."""
        t = time.perf_counter()
        self.rollout_model.sync()
        res = heldout.evaluate(
            self.policy,
            self.rollout_model,
            self.eval_items,
            elicitation=self.cfg.elicitation,
            max_new_tokens=self.cfg.max_new_tokens,
        )
        rec = {"step": step, "event": "eval", **res.to_log(), "eval_s": time.perf_counter() - t}
        self.log.write(rec)
        self.last_eval = rec
        return rec

    def is_checkpoint_step(self, step: int) -> bool:
        """Every ``save_every`` steps and at the end."""
        return step == self.cfg.steps or bool(
            self.cfg.save_every and step % self.cfg.save_every == 0
        )

    def save_checkpoint(self, step: int) -> None:
        """``checkpoint/``: the weights and the trainer state, swapped in together."""
        info = run_info(self.cfg, self.algo, step, self.wall_s(), **self.hardware())
        state = {
            "step": step,
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "extra": {k: m.state_dict() for k, m in self.extra.items()},
            "reference_lora": self.reference.state(),
            "rng": rng_state(),
            "wall_s": self.wall_s(),
        }
        # inside the folder before it is swapped in: adapter and state always match
        save_model(
            self.policy,
            checkpoint_dir(self.out),
            info,
            also=lambda d: save_trainer_state(d / TRAINER_STATE, state),
        )

    # -- end -----------------------------------------------------------------------------------

    def finish(self) -> TrainResult:
        """Save the final ``adapter/`` or ``model/`` (the last step is already checkpointed)."""
        step = self.cfg.steps
        name = "adapter" if self.policy.is_lora else "model"
        info = run_info(
            self.cfg, self.algo, step, self.wall_s(), final_eval=self.last_eval, **self.hardware()
        )
        save_model(self.policy, self.out / name, info)
        return TrainResult(self.out, self.out / name, step, self.wall_s(), self.last_eval)

    def hardware(self) -> dict[str, str]:
        """What the run computed on: ``--dtype auto`` resolves per machine (bf16 autocast on a
        CPU with AVX512-BF16/AMX, fp32 on AVX2), and that changes the numbers a run produces."""
        cpu = f"{os.cpu_count()} CPU cores, " + (
            "AVX512-BF16/AMX" if cpu_has_fast_bf16() else "no native bf16"
        )
        return {
            "device": str(self.policy.device),
            "dtype": str(self.policy.dtype).removeprefix("torch."),
            "cpu": cpu,
        }

    def wall_s(self) -> float:
        """Training seconds so far, across resumes."""
        return self.wall_before + time.perf_counter() - self.t0

    def _last_line(self) -> str:
        try:
            lines = self.log.path.read_text().splitlines()
        except OSError:
            return ""
        rec = json.loads(lines[-1]) if lines else {}
        if rec.get("event") == "eval":
            return (
                f"eval acc {rec['eval_accuracy']:.2f} smECE "
                f"{_fmt(rec.get('eval_smece'))} AUROC {_fmt(rec.get('eval_auroc'))} "
                f"conf {_fmt(rec.get('eval_conf_mean'))}"
            )
        return (
            f"R {_fmt(rec.get('reward'))} acc {_fmt(rec.get('accuracy'))} conf "
            f"{_fmt(rec.get('conf_mean'))}±{_fmt(rec.get('conf_std'))} "
            f"{_fmt(rec.get('step_s'), 1)}s/step"
        )


def _fmt(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


class JsonlLog:
    """Append-only JSONL, flushed after every line. ``truncate_after(step)`` drops lines logged
    after the checkpoint a resumed run restarts from, so each step appears once."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:  # a line cut short by the kill
                continue
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(_plain(record), allow_nan=False) + "\n")
            f.flush()


def _plain(o: Any) -> Any:
    """JSON-safe copy: numpy scalars as Python numbers, NaN/inf as null (strict JSON)."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)

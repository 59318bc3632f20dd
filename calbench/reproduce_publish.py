"""Publishing what ``calbench reproduce`` trained: each arm's adapter at the chosen step, its
training config and log, and a model card, into ``calbench/reference/<name>/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from calbench.core.errors import RuntimeFailure
from calbench.core.models import REFERENCE_DIR
from calbench.reproduce_recipe import (
    BASE_MODEL,
    RL_STEPS,
    SELECTION_RULE,
    WARMUP_ARGS,
    Arm,
    warmup_name,
)

SELECTION_FILE = "selection.json"  # in --out; a copy ships beside the RLCR adapter


def source(out: Path, arm: Arm | None, step: int | None) -> Path:
    """The folder that holds what ships for ``arm`` (None: seed 0's warm-up) at ``step``: a
    snapshot for the arms trained in snapshots, else the run's final adapter — or, for a run
    stopped before its last step, its latest checkpoint (the model card then says so)."""
    if arm is None:
        run = out / warmup_name(0)
    elif arm.snapshots:
        return out / arm.name / "snapshots" / f"step{step}"
    else:
        run = out / arm.name
    for sub in ("adapter", "checkpoint"):
        if (run / sub / "adapter_config.json").is_file():
            return run / sub
    return run / "adapter"


def publish(
    out: Path,
    arms: list[Arm],
    step: int | None,
    dest_root: Path = REFERENCE_DIR,
    warmup: bool = True,
) -> list[str]:
    """Copy seed 0's warm-up (``warmup``) and each arm's adapter at ``step`` into
    ``dest_root/<name>/`` with its config, log and model card; returns the names published."""
    todo: list[Arm | None] = ([None] if warmup else []) + list(arms)
    done = []
    for arm in todo:
        name = "warmup" if arm is None else arm.name
        src = source(out, arm, step)
        if not (src / "adapter_config.json").is_file():
            raise RuntimeFailure(f"{src}: no adapter to publish as {name}")
        run = out / (warmup_name(0) if arm is None else arm.name)
        dest = dest_root / name
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("trainer_state.pt", ".calbench_*"))
        shutil.copy2(run / "log.jsonl", dest / "train_log.jsonl")
        info = json.loads((dest / "calbench_train.json").read_text())
        if arm is not None and arm.snapshots:
            # the run went on past the snapshot: its log is cut there, its config is the leg's
            _cut_log(dest / "train_log.jsonl", step)
            config = {"algo": info.get("algo"), **info.get("config", {})}
            (dest / "train_config.json").write_text(json.dumps(config, indent=2) + "\n")
        else:
            shutil.copy2(run / "config.json", dest / "train_config.json")
        if arm is not None and (out / SELECTION_FILE).is_file():
            shutil.copy2(out / SELECTION_FILE, dest / SELECTION_FILE)
        size = sum(p.stat().st_size for p in dest.iterdir() if p.suffix == ".safetensors")
        (dest / "README.md").write_text(model_card(arm, info, size, step))
        print(f"published {BASE_MODEL}-{name}: {dest} ({size / 1e6:.1f} MB of weights)")
        done.append(name)
    return done


def _cut_log(path: Path, step: int | None) -> None:
    if step is None:
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(x + "\n" for x in keep))


def train_command(arm: Arm | None, steps: int | str) -> list[str]:
    """The ``calbench train`` command that makes ``arm`` (None: the seed-0 warm-up)."""
    if arm is None:
        model, out, rest = BASE_MODEL, "runs/reference/warmup", [*WARMUP_ARGS, "--seed", "0"]
        return ["calbench", "train", "--method", "warmup", "--model", model, "--out", out, *rest]
    start = f"runs/reference/{arm.warmup}/adapter"
    out = f"runs/reference/{arm.name}"
    return ["calbench", "train", "--model", start, "--out", out, *arm.train_args(steps)]


def model_card(arm: Arm | None, info: dict, size: int, step: int | None) -> str:
    cfg = info.get("config", {})
    # a seed-s model is evaluated on seed s's test pool, the one its training left out
    seed = f" --seed {arm.seed}" if arm is not None and arm.seed else ""
    spec = f"{BASE_MODEL}-{'warmup' if arm is None else arm.name}"
    if arm is None:
        what = "the supervised format warm-up only (the starting point of the seed-0 RL arms)"
        start, steps = "", str(info.get("steps"))
    else:
        what = arm.what
        start = (
            f", starting from `{cfg.get('model')}`: the seed-{arm.seed} warm-up of the same "
            "`reproduce` output folder"
            + (", published beside this adapter as `smollm2-135m-warmup`" if arm.seed == 0 else "")
        )
        steps = f"{info.get('steps')} (the step chosen on validation: {step})"
        if info.get("steps") != step:
            steps += " — **a checkpoint of a run stopped early**, not the finished run below"
        if arm.snapshots:
            steps += f" (its run went on to {RL_STEPS}; this is the copy kept at step {step})"
    choice = (
        ""
        if arm is None
        else f"""
The number of steps was chosen on the validation split (never the test split) by a rule written
down before any run was evaluated (`{SELECTION_FILE}` holds every checkpoint's numbers):
{SELECTION_RULE}
"""
    )
    return f"""# {spec}

LoRA adapter on SmolLM2-135M-Instruct (Apache-2.0): {what}.
Trained by `calbench reproduce` (calbench commit {info.get("git_commit") or "unknown"}){start}.

| | |
|---|---|
| data | reasoning-gym `chain_sum` (2–3 terms of 1–2 digits), train stream of seed {cfg.get("seed", 0)}; never the 500-question held-out pool of that seed |
| method / algorithm | {info.get("method")} / {info.get("algo")} |
| steps | {steps} |
| wall time | {info.get("wall_time_s", 0) / 60:.1f} min |
| machine | {_machine(info)} |
| adapter | {size / 1e6:.1f} MB (`adapter_model.safetensors`) |

Exact command (as run by `calbench reproduce`):

```
{" ".join(train_command(arm, step if step is not None else "K"))}
```
{choice}
`train_config.json` holds every hyperparameter, `train_log.jsonl` one line per step (reward and
its parts, accuracy, mean / std / distinct stated confidences, KL, step time). Use it as
`calbench eval --model {spec} --tasks chain_sum{seed}`. Results: `docs/reference-models.md` and
`leaderboard/`.
"""


def _machine(info: dict) -> str:
    if "dtype" not in info:  # runs from before the trainer recorded it (all were on AVX2 CPUs)
        return "2 shared AMD EPYC cores (AVX2), fp32, 1 torch thread per run, no GPU"
    threads = info.get("config", {}).get("threads") or "default"
    dtype = "bf16 autocast (fp32 weights)" if info["dtype"] == "bfloat16" else info["dtype"]
    return f"{info.get('cpu', info['device'])}, {dtype}, torch threads: {threads}"

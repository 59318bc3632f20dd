"""``calbench reproduce``: the reference models, from nothing to the leaderboard, in one command.

    warm-up  ->  GRPO rlvr | GRPO rlcr  ->  publish adapters  ->  calbench eval  ->  leaderboard

Every stage is an ordinary ``calbench train`` / ``calbench eval`` / ``calbench leaderboard``
command (printed before it runs, its output kept in ``OUT/logs/<stage>.log``), so the recipe is
readable here and each step can be rerun by hand. Killed? Run the same command again: a finished
stage is skipped (its adapter or a complete run manifest exists) and an unfinished one resumes
(the trainer from its last checkpoint, evals from lm-eval's request cache). ``--jobs 2`` runs
independent stages side by side, one torch thread each — on two cores that beats one job with two
threads, because small-batch CPU kernels do not scale to two threads.

The two RL arms differ only in ``--method``; everything else in :data:`RL_ARGS` is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import REFERENCE_DIR, REFERENCE_MODELS

# LoRA r16 on the top 12 of 30 layers: 1.96M parameters, a 7.8 MB adapter (the cap is 10).
LORA_ARGS = ["--lora-r", "16", "--lora-alpha", "32", "--lora-last-layers", "12"]
# 640 worked examples, one epoch (40 steps). lr 1e-3: at 3e-4 the same 20 steps reached 22%
# held-out accuracy with 84% format, at 1e-3 34% with 100% (120 questions each, this machine).
WARMUP_ARGS = [
    "--examples",
    "640",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--lr",
    "1e-3",
    "--eval-size",
    "120",
    "--eval-every",
    "20",
    *LORA_ARGS,
]
RL_STEPS = 60
# 48 new tokens: the worked steps + tags of the longest chains are 43 tokens. --conf-grad
# expected (a no-op for rlvr, whose reward ignores the confidence): with the sampled estimator
# 40 steps at lr 2e-4 left RLCR stating 0.5 for 479 of 500 held-out questions (AUROC 0.48).
# lr 1e-3: at 2e-4 the mean of RLCR's confidence distribution spanned only 0.014-0.015 across
# the difficulty bins after 10 steps. --conf-entropy 0.02 (both arms): keeps the digit's optimum
# interior, a bell of width ~0.1 around P(correct) (grpo.py docstring); without it RLCR fell onto
# 0.2 for every question. --conf-weight 10 (λ; it scales τ too, so the optimum is unchanged):
# at λ = 1 the digit distribution was still far from even its question-independent optimum after
# 40 steps (entropy 1.91 nats; the bell around p ≈ 0.3 has 1.42).
# Steps and batch: 40 steps of 4 questions × 8 samples (160 questions) left the confidence one
# number however λ was set — its spread across a batch (digit_eq_std) stayed ≤ 0.01 for 50 steps
# and only then grew (0.17 by step 100 of a 120-step probe). Chosen on the validation split
# (chain_sum_val, never the test split) between two equal-cost RLCR probes by a rule fixed
# before either was evaluated (higher greedy AUROC unless > 5 points less accurate):
# 120 × (4 × 8) reached AUROC 0.841, accuracy 0.290, ECE 0.078; 60 × (16 × 4) — four questions
# per difficulty bin per step — AUROC 0.879, accuracy 0.380, ECE 0.181. The second is used.
RL_ARGS = [
    "--algo",
    "grpo",
    "--steps",
    str(RL_STEPS),
    "--prompts-per-step",
    "16",
    "--group-size",
    "4",
    "--max-new-tokens",
    "48",
    "--lr",
    "1e-3",
    "--beta",
    "0.04",
    "--train-order",
    "stratified",
    "--conf-grad",
    "expected",
    "--conf-entropy",
    "0.02",
    "--conf-weight",
    "10",
    "--eval-size",
    "0",
    "--save-every",
    "10",
]
RL_METHODS = ("rlvr", "rlcr")
# (task, extra eval args): the in-domain held-out split and the out-of-domain checks.
EVALS: list[tuple[str, list[str]]] = [
    ("chain_sum", ["--max-new-tokens", "64"]),  # all 500 held-out questions
    ("gsm_symbolic", ["--limit", "100", "--max-new-tokens", "48"]),
    ("truthfulqa_mc", ["--max-new-tokens", "32"]),  # all 817; needs --data-dir
    ("gsm8k", ["--limit", "300", "--max-new-tokens", "48"]),  # needs --data-dir
]
MODELS = ("smollm2-135m", *REFERENCE_MODELS)
# RL needs right answers to compare with wrong ones: a warm-up below this held-out accuracy
# (its final evaluation) stops the run instead of spending an hour of RL at the floor.
WARMUP_MIN_ACCURACY = 0.15
STAGES = ("warmup", "rl", "publish", "eval", "leaderboard")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/reference", help="training runs and logs")
    parser.add_argument("--results", default="results", help="eval results root")
    parser.add_argument("--leaderboard", default="leaderboard", help="leaderboard folder")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="local data (gsm8k, truthfulqa); tasks needing it are skipped without it",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}"
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated subset of the eval tasks ({', '.join(t for t, _ in EVALS)})",
    )
    parser.add_argument("--jobs", type=int, default=2, help="stages run side by side")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")


def _calbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "calbench.cli", *args]


class Runner:
    def __init__(self, out: Path, jobs: int, dry_run: bool):
        self.out, self.jobs, self.dry_run = out, max(1, jobs), dry_run
        self.logs = out / "logs"
        self.times: dict[str, float] = {}

    def run(self, name: str, cmd: list[str], threads: int | None = None) -> None:
        shown = " ".join(["calbench", *cmd[3:]])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", flush=True)
        if self.dry_run:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads or self.threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
        t0 = time.perf_counter()
        with open(self.logs / f"{name}.log", "a") as log:
            log.write(f"\n$ {shown}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.times[name] = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeFailure(f"stage {name} failed (exit {rc}); see {self.logs / name}.log")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {self.times[name]:.0f} s", flush=True)

    @property
    def threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def parallel(self, named: list[tuple[str, list[str]]]) -> None:
        if not named:
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(self.run, n, c) for n, c in named]:
                f.result()


def _done_training(folder: Path, steps: int | None) -> bool:
    info = folder / "adapter" / "calbench_train.json"
    if not info.is_file():
        return False
    return steps is None or json.loads(info.read_text()).get("steps") == steps


def _done_eval(results: Path, model: str, task: str) -> bool:
    m = results / model / task / "tags" / "manifest.json"
    try:
        return json.loads(m.read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def check_warmup(run: Path, floor: float = WARMUP_MIN_ACCURACY) -> float:
    """The warm-up's final held-out accuracy; a :class:`RuntimeFailure` below ``floor``."""
    info = run / "adapter" / "calbench_train.json"
    try:
        acc = json.loads(info.read_text())["final_eval"]["eval_accuracy"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RuntimeFailure(f"{info}: no finished warm-up with a final evaluation ({e})") from e
    if acc < floor:
        raise RuntimeFailure(
            f"the warm-up answers {acc:.1%} of held-out questions right (< {floor:.0%}): RL "
            "from there has almost no right answers to learn from; fix the warm-up first"
        )
    return float(acc)


def publish(
    out: Path, dest_root: Path = REFERENCE_DIR, only: tuple[str, ...] | None = None
) -> None:
    """Copy each trained adapter (or those named in ``only``: warmup, rlvr, rlcr), its config,
    log and a model card into calbench/reference/."""
    for spec, short in REFERENCE_MODELS.items():
        if only is not None and short not in only:
            continue
        run = out / short
        dest = dest_root / short
        src = run / "adapter"
        if not (src / "adapter_config.json").is_file():
            # a run stopped before its last step: publish its latest checkpoint, and say so
            src = run / "checkpoint"
            if not (src / "adapter_config.json").is_file():
                raise RuntimeFailure(f"{run}: no adapter or checkpoint to publish")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("trainer_state.pt"))
        for name in ("log.jsonl", "config.json"):
            shutil.copy2(run / name, dest / f"train_{name}")
        info = json.loads((dest / "calbench_train.json").read_text())
        size = sum(p.stat().st_size for p in dest.iterdir() if p.suffix == ".safetensors")
        (dest / "README.md").write_text(model_card(spec, short, info, size))
        print(f"published {spec}: {dest} ({size / 1e6:.1f} MB of weights)")


def model_card(spec: str, short: str, info: dict, size: int) -> str:
    cfg = info.get("config", {})
    what = {
        "warmup": "the supervised format warm-up only (the starting point of both RL arms)",
        "rlvr": "the warm-up, then GRPO with the correctness-only reward (RLVR)",
        "rlcr": "the warm-up, then GRPO with correctness + Brier (RLCR, Damani et al. 2025)",
    }[short]
    partial = ""
    if short != "warmup" and info.get("steps") != cfg.get("steps"):
        partial = (
            " — **a checkpoint of a run stopped early**, not the finished run the "
            "command below describes"
        )
    cmd = (
        [
            "calbench",
            "train",
            "--method",
            "warmup",
            "--model",
            "smollm2-135m",
            "--out",
            "runs/reference/warmup",
            *WARMUP_ARGS,
        ]
        if short == "warmup"
        else [
            "calbench",
            "train",
            "--method",
            short,
            "--model",
            "runs/reference/warmup/adapter",
            "--out",
            f"runs/reference/{short}",
            *RL_ARGS,
            *LORA_ARGS,
        ]
    )
    start = (
        ""
        if short == "warmup"
        else (
            f", starting from `{cfg.get('model')}`: the warm-up run of the same `reproduce` output "
            "folder, published beside this adapter as `smollm2-135m-warmup`"
        )
    )
    return f"""# {spec}

LoRA adapter on SmolLM2-135M-Instruct (Apache-2.0): {what}.
Trained by `calbench reproduce` (calbench commit {info.get("git_commit") or "unknown"}){start}.

| | |
|---|---|
| data | reasoning-gym `chain_sum` (2–3 terms of 1–2 digits), train stream of seed {cfg.get("seed", 0)}; never the 500-question held-out pool |
| method / algorithm | {info.get("method")} / {info.get("algo")} |
| steps | {info.get("steps")} of {cfg.get("steps") if short != "warmup" else info.get("steps")} configured{partial} |
| wall time | {info.get("wall_time_s", 0) / 60:.1f} min |
| machine | {_machine(info)} |
| adapter | {size / 1e6:.1f} MB (`adapter_model.safetensors`) |

Exact command (as run by `calbench reproduce`):

```
{" ".join(cmd)}
```

`train_config.json` holds every hyperparameter, `train_log.jsonl` one line per step (reward and
its parts, accuracy, mean / std / distinct stated confidences, KL, step time). Use it as
`calbench eval --model {spec} --tasks chain_sum`. Results: the README's headline table and
`leaderboard/`.
"""


def _machine(info: dict) -> str:
    if "dtype" not in info:  # runs from before the trainer recorded it (all were on AVX2 CPUs)
        return "2 shared AMD EPYC cores (AVX2), fp32, 1 torch thread per run, no GPU"
    threads = info.get("config", {}).get("threads") or "default"
    dtype = "bf16 autocast (fp32 weights)" if info["dtype"] == "bfloat16" else info["dtype"]
    return f"{info.get('cpu', info['device'])}, {dtype}, torch threads: {threads}"


def run(args: argparse.Namespace) -> int:
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UsageError(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    tasks = [t for t, _ in EVALS] if not args.tasks else args.tasks.split(",")
    unknown = [t for t in tasks if t not in dict(EVALS)]
    if unknown:
        raise UsageError(f"unknown eval task(s) {', '.join(unknown)}")
    out, results = Path(args.out), Path(args.results)
    r = Runner(out, args.jobs, args.dry_run)
    t0 = time.perf_counter()
    if "warmup" in stages and not _done_training(out / "warmup", None):
        cores = os.cpu_count() or 1  # the warm-up runs alone
        r.run(
            "warmup",
            _calbench(
                "train",
                "--method",
                "warmup",
                "--model",
                "smollm2-135m",
                "--out",
                str(out / "warmup"),
                "--no-progress",
                "--threads",
                str(cores),
                *WARMUP_ARGS,
            ),
            threads=cores,
        )
    if "rl" in stages:
        if not args.dry_run:
            check_warmup(out / "warmup")
        r.parallel(
            [
                (
                    m,
                    _calbench(
                        "train",
                        "--method",
                        m,
                        "--model",
                        str(out / "warmup" / "adapter"),
                        "--out",
                        str(out / m),
                        "--no-progress",
                        "--threads",
                        str(r.threads),
                        *RL_ARGS,
                        *LORA_ARGS,
                    ),
                )
                for m in RL_METHODS
                if not _done_training(out / m, RL_STEPS)
            ]
        )
    if "publish" in stages and not args.dry_run:
        publish(out)
    if "eval" in stages:
        data = ["--data-dir", args.data_dir] if args.data_dir else []
        todo = []
        for task in tasks:
            if task in ("gsm8k", "truthfulqa_mc") and not args.data_dir:
                print(f"skipping {task}: needs --data-dir (e.g. ../shared/data)")
                continue
            for model in MODELS:
                if _done_eval(results, model, task):
                    continue
                todo.append(
                    (
                        f"eval-{model}-{task}",
                        _calbench(
                            "eval",
                            "--model",
                            model,
                            "--tasks",
                            task,
                            "--elicitation",
                            "tags",
                            "--batch-size",
                            "16",
                            "--redact",
                            "--output",
                            str(results),
                            *data,
                            *dict(EVALS)[task],
                        ),
                    )
                )
        r.parallel(todo)
    if "leaderboard" in stages:
        r.run("leaderboard", _calbench("leaderboard", str(results), "--out", args.leaderboard))
        # the README's side-by-side reliability diagrams of the reference models, per task
        for task in tasks:
            runs = [str(results / m / task / "tags") for m in REFERENCE_MODELS]
            if args.dry_run or all((Path(x) / "metrics.json").is_file() for x in runs):
                r.run(
                    f"plot-{task}",
                    _calbench(
                        "plot",
                        *runs,
                        "--out",
                        str(Path(args.leaderboard) / "figures" / f"reference_{task}.png"),
                    ),
                )
    total = time.perf_counter() - t0
    print(f"reproduce: {total / 60:.1f} min wall for stages {', '.join(stages)}")
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        (out / "reproduce_times.json").write_text(
            json.dumps({"stages": stages, "wall_s": total, "per_step_s": r.times}, indent=1)
        )
    return 0

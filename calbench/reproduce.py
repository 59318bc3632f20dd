"""``calbench reproduce``: the reference models, from nothing to the leaderboard, in one command.

    warmup   format warm-up, one per seed (seed 0's ships as smollm2-135m-warmup)
    rl       RLVR, RLCR and PPO of seed 0, 80 steps each, a copy of the adapter every 20 steps
    select   RLCR's four copies on chain_sum_val (200 questions): the rule below picks a step k
    rl       the other arms straight to k: RLVR and RLCR of seeds 1 and 2 (and, with
             --ablation, RLVR with RLCR's entropy bonus)
    publish  every arm at step k into calbench/reference/<name>/
    eval     calbench eval of every model (a seed-s model with --seed s: its own test pool)
    leaderboard

When rl, publish and eval all run, the middle stages are one dependency graph (``_pipeline``):
each step starts when what it needs is done, so the selection does not wait for PPO and a model
is evaluated while others still train.

The arms, their arguments and the seeds are :mod:`calbench.reproduce_recipe`'s; every stage is an
ordinary ``calbench train`` / ``calbench eval`` / ``calbench leaderboard`` command (printed before
it runs, its output kept in ``OUT/logs/<name>.log``), so the recipe is readable and each step can
be rerun by hand. Killed? Run the same command again: a finished step is skipped (its adapter,
snapshot, selection or a complete run manifest of the same weights exists) and an unfinished one
resumes (the trainer from its last checkpoint, evals from lm-eval's request cache). Training to
step 20, then resuming to 40, … gives the run one 80-step command would: the trainer has no
learning-rate schedule, its questions for n steps are the first of those for more, and it
resumes exactly (optimizer, RNG, sampling seeded by step). ``--jobs 2`` runs independent steps
side by side, one torch thread each: on two cores that beats one job with two threads.

Selection rule, written down before any v2 run was evaluated: RLCR (seed 0) trains 80 steps and
keeps its adapter every 20 steps. Each is evaluated greedily on the first 200 questions of
chain_sum_val (tags, 64 new tokens). Candidates: the checkpoints whose confidence parse rate is
>= 95% (all of them if none is) and whose accuracy is within 3 points of the best candidate's.
Among the candidates with AUROC >= 0.80, the lowest ECE (10 equal-width bins) wins; if none
reaches that AUROC, the highest AUROC wins. Metrics are compared rounded to 3 decimals; a tie
goes to fewer steps. Every arm and seed ships at the chosen step.

The choice and every checkpoint's validation numbers go to ``OUT/selection.json`` (and beside
each published RL adapter); wall times per stage and per command to ``OUT/reproduce_times.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import REFERENCE_DIR, REFERENCE_MODELS, weights_hash
from calbench.core.records import atomic_write_json
from calbench.reproduce_publish import SELECTION_FILE, publish
from calbench.reproduce_recipe import (
    BASE_MODEL,
    EVALS,
    NEEDS_DATA_DIR,
    PLOTTED,
    SELECT_ARM,
    SELECT_N,
    SELECT_TASK,
    SELECTION_RULE,
    SNAPSHOT_STEPS,
    WARMUP_ARGS,
    Arm,
    arms,
    choose_step,
    parse_seeds,
    warmup_name,
)
from calbench.reproduce_runner import Job, Runner, calbench_command

# RL needs right answers to compare with wrong ones: a warm-up below this held-out accuracy
# (its final evaluation) stops the run instead of spending an hour of RL at the floor.
WARMUP_MIN_ACCURACY = 0.15
STAGES = ("warmup", "rl", "select", "publish", "eval", "leaderboard")
PIPELINED = ("rl", "select", "publish", "eval")  # one dependency graph when rl, publish, eval run
EVAL_ARGS = ["--elicitation", "tags", "--batch-size", "16"]


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
        help=f"comma-separated subset of the eval tasks ({', '.join(t for t, _, _ in EVALS)})",
    )
    parser.add_argument("--seeds", default="0,1,2", help="run seeds (0,1,2); seed 0 ships as is")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train and evaluate smollm2-135m-rlvr-entropy (RLVR with RLCR's entropy bonus)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="steps run side by side")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")


def _trained(info: Path, steps: int | None) -> bool:
    """Whether ``info`` (a saved model's calbench_train.json) exists, at ``steps`` if given."""
    if not info.is_file():
        return False
    return steps is None or json.loads(info.read_text()).get("steps") == steps


def _eval_state(results: Path, spec: str, task: str) -> str:
    """ "done" (a complete run of the current weights), "stale" (complete, other weights: the
    published adapter has changed since) or "todo"."""
    m = results / spec / task / "tags" / "manifest.json"
    try:
        manifest = json.loads(m.read_text())
    except (OSError, json.JSONDecodeError):
        return "todo"
    if manifest.get("status") != "complete":
        return "todo"
    folder = REFERENCE_DIR / REFERENCE_MODELS.get(spec, "")
    published = spec in REFERENCE_MODELS and (folder / "adapter_config.json").is_file()
    ran = (manifest.get("model_info") or {}).get("weights_sha256")
    return "stale" if published and ran != weights_hash(folder) else "done"


def check_warmup(run: Path, floor: float = WARMUP_MIN_ACCURACY) -> float:
    """The warm-up's final held-out accuracy; a :class:`RuntimeFailure` below ``floor``."""
    info = run / "adapter" / "calbench_train.json"
    try:
        acc = json.loads(info.read_text())["final_eval"]["eval_accuracy"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RuntimeFailure(f"{info}: no finished warm-up with a final evaluation ({e})") from e
    if acc < floor:
        raise RuntimeFailure(
            f"{run}: the warm-up answers {acc:.1%} of held-out questions right (< {floor:.0%}): "
            "RL from there has almost no right answers to learn from; fix the warm-up first"
        )
    return float(acc)


def _train_cmd(out: Path, arm: Arm, steps: int | str, threads: int) -> list[str]:
    start = str(out / arm.warmup / "adapter")
    common = ["--model", start, "--out", str(out / arm.name), "--no-progress"]
    return calbench_command("train", *common, "--threads", str(threads), *arm.train_args(steps))


def _train_in_snapshots(r: Runner, out: Path, arm: Arm) -> None:
    """Train ``arm`` to each of SNAPSHOT_STEPS in turn (each resumes the last), keeping a copy of
    the adapter at each."""
    for k in SNAPSHOT_STEPS:
        snap = out / arm.name / "snapshots" / f"step{k}"
        if _trained(snap / "calbench_train.json", k):
            continue
        r.run(f"{arm.name}-step{k}", _train_cmd(out, arm, k, r.threads))
        if r.dry_run:
            continue
        tmp = snap.with_name(snap.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out / arm.name / "adapter", tmp)
        tmp.rename(snap)


def read_selection(out: Path, published: bool = False) -> int | None:
    """The step the select stage chose (None before it has). ``published``: without one in
    ``out``, read the copy shipped beside the published RLCR adapter — for runs without seed 0
    (``--seeds 1,2`` in a later session), which train to the step seed 0's selection chose."""
    f = out / SELECTION_FILE
    shipped = REFERENCE_DIR / SELECT_ARM / SELECTION_FILE
    if not f.is_file() and published and shipped.is_file():
        print(f"select: no {f}; using the published choice {shipped}")
        f = shipped
    if not f.is_file():
        return None
    try:
        record = json.loads(f.read_text())
        step = int(record["chosen_step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RuntimeFailure(f"{f}: unreadable ({e}); delete it to select again") from e
    if f == shipped and (record.get("rule") != SELECTION_RULE or step not in SNAPSHOT_STEPS):
        raise RuntimeFailure(
            f"{f}: chosen by another recipe's rule (step {step}); run seed 0 again "
            "(--seeds 0,...) so that its select stage chooses under this one"
        )
    return step


def _val_metrics(folder: Path, snapshot: Path) -> Path | None:
    """The metrics.json of the complete validation run of ``snapshot``'s weights under
    ``folder`` (a run of other weights — the arm was retrained since — does not count)."""
    want = weights_hash(snapshot) if snapshot.is_dir() else None
    for m in sorted(folder.glob(f"*/{SELECT_TASK}/tags/metrics.json")):
        try:
            manifest = json.loads((m.parent / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ran = (manifest.get("model_info") or {}).get("weights_sha256")
        if manifest.get("status") == "complete" and ran == want:
            return m
    return None


def val_row(metrics: Path, step: int) -> dict:
    """One checkpoint's validation numbers from its ``calbench eval`` run's metrics.json."""
    m = json.loads(metrics.read_text())
    if m.get("n") != SELECT_N:
        raise RuntimeFailure(f"{metrics}: {m.get('n')} questions, the rule needs {SELECT_N}")
    val = {k: (v or {}).get("value") for k, v in m["metrics"].items()}
    keep = ("accuracy", "ece", "auroc", "brier", "smooth_ece", "mean_confidence")
    return {"step": step, "n": m["n"], "parse_rate": m.get("coverage")} | {
        k: val.get(k) for k in keep
    }


def _select_arm(out: Path, arm_list: list[Arm]) -> tuple[Arm | None, int | None]:
    """The arm the selection reads (None without seed 0) and the step already chosen, if any."""
    arm = next((a for a in arm_list if a.name == SELECT_ARM), None)
    done = read_selection(out, published=arm is None)
    if done is None and arm is None:
        raise UsageError(
            "the select stage reads RLCR of seed 0: include seed 0 in --seeds "
            f"(or publish seed 0 first: its {SELECTION_FILE} ships with it)"
        )
    return arm, done


def _val_eval(r: Runner, out: Path, arm: Arm, k: int) -> list[str] | None:
    """The validation eval of ``arm``'s step-``k`` copy (None: a complete one exists)."""
    snap, dest = out / arm.name / "snapshots" / f"step{k}", out / "select" / f"step{k}"
    if _val_metrics(dest, snap):
        return None
    if not r.dry_run and not (snap / "adapter_config.json").is_file():
        raise RuntimeFailure(f"{snap}: missing; the rl stage makes it")
    cmd = ["eval", "--model", str(snap), "--tasks", SELECT_TASK, "--limit", str(SELECT_N)]
    return calbench_command(*cmd, *EVAL_ARGS, "--max-new-tokens", "64", "--output", str(dest))


def _record_choice(out: Path, arm: Arm) -> int:
    """Apply the rule to the validation runs of ``arm``'s copies; write selection.json."""
    table = []
    for k in SNAPSHOT_STEPS:
        snap = out / arm.name / "snapshots" / f"step{k}"
        metrics = _val_metrics(out / "select" / f"step{k}", snap)
        if metrics is None:
            raise RuntimeFailure(f"{out / 'select' / f'step{k}'}: no complete run of {snap}")
        table.append(val_row(metrics, k))
    step, why = choose_step(table)
    record = {"rule": SELECTION_RULE, "task": SELECT_TASK, "n": SELECT_N, "arm": arm.spec}
    atomic_write_json(
        out / SELECTION_FILE, record | {"checkpoints": table, "chosen_step": step, "why": why}
    )
    print(f"select: step {step} — {why}")
    return step


def select(r: Runner, out: Path, arm_list: list[Arm]) -> int | None:
    """The select stage: evaluate RLCR seed 0's snapshots on the validation split and apply the
    rule; returns the chosen step (None in a dry run that has not chosen yet)."""
    arm, done = _select_arm(out, arm_list)
    if done is not None:
        print(f"select: step {done} already chosen")
        return done
    assert arm is not None  # _select_arm raised otherwise
    r.parallel_fns(
        [lambda k=k: r.run_if(f"select-step{k}", _val_eval(r, out, arm, k)) for k in SNAPSHOT_STEPS]
    )
    return None if r.dry_run else _record_choice(out, arm)


def _train_rest(r: Runner, out: Path, arm_list: list[Arm], k: int | None) -> None:
    """The arms that train straight to the chosen step ``k`` (``K`` in a dry run before it)."""
    rest = [a for a in arm_list if not a.snapshots]
    if rest and k is None and not r.dry_run:
        print(f"rl: {', '.join(a.name for a in rest)} wait for the select stage's step")
        return
    r.parallel_fns([lambda a=a: _train_to(r, out, a, k) for a in rest])


def _train_to(r: Runner, out: Path, a: Arm, k: int | None) -> None:
    """Train ``a`` straight to step ``k`` unless it is there already."""
    ckpt = out / a.name / "checkpoint" / "calbench_train.json"
    if k is not None and ckpt.is_file() and json.loads(ckpt.read_text())["steps"] > k:
        raise RuntimeFailure(f"{ckpt.parent}: trained past the chosen step {k}; remove it")
    if not _trained(out / a.name / "adapter" / "calbench_train.json", k):
        r.run(a.name, _train_cmd(out, a, k if k is not None else "K", r.threads))


def _pipeline(
    r: Runner,
    args: argparse.Namespace,
    stages: list[str],
    tasks: list[str],
    arm_list: list[Arm],
    seeds: list[int],
) -> None:
    """The rl, select, publish and eval stages as one dependency graph on ``--jobs`` workers:
    the snapshot arms train side by side; RLCR's copies are evaluated on validation as soon as
    RLCR has trained (not when the slowest arm has), the step is chosen, the other arms train to
    it; each model is published as soon as it is trained and the step is known, and its evals
    queue behind it."""
    out = r.out
    arm, done = _select_arm(out, arm_list)
    if done is None and "select" not in stages and not r.dry_run:
        raise RuntimeFailure("publish needs the select stage's step: run it first")
    k: dict[str, int | None] = {"step": done}

    def publish_now(a: Arm | None) -> None:
        if not r.dry_run:
            publish(out, [] if a is None else [a], k["step"], warmup=a is None)

    def train_to_k(a: Arm) -> None:
        _train_to(r, out, a, k["step"])
        publish_now(a)

    def choose() -> None:
        if not r.dry_run:
            k["step"] = _record_choice(out, arm)

    jobs: list[Job] = [("publish:warmup", lambda: publish_now(None), ())] if 0 in seeds else []
    jobs += [
        (f"train:{a.name}", lambda a=a: _train_in_snapshots(r, out, a), ())
        for a in arm_list
        if a.snapshots
    ]
    if done is None and arm is not None:
        val = [f"select-step{s}" for s in SNAPSHOT_STEPS]
        after_rlcr = (f"train:{arm.name}",)
        jobs += [
            (n, lambda n=n, s=s: r.run_if(n, _val_eval(r, out, arm, s)), after_rlcr)
            for n, s in zip(val, SNAPSHOT_STEPS, strict=True)
        ]
        jobs.append(("select", choose, (*after_rlcr, *val)))
    for a in arm_list:
        if a.snapshots:
            jobs.append(
                (f"publish:{a.name}", lambda a=a: publish_now(a), (f"train:{a.name}", "select"))
            )
        else:
            jobs.append((f"publish:{a.name}", lambda a=a: train_to_k(a), ("select",)))
    for name, spec, command in _evals(args, tasks, arm_list):
        arm_name = REFERENCE_MODELS.get(spec)  # base: None, published immediately
        jobs.append((name, lambda n=name, c=command: r.run_if(n, c()), (f"publish:{arm_name}",)))
    r.graph(jobs)


def _evals(
    args: argparse.Namespace, tasks: list[str], arm_list: list[Arm]
) -> list[tuple[str, str, Callable[[], list[str] | None]]]:
    """(name, model, command) per eval; ``command()`` is called when the eval's turn comes (its
    model may be published only then) and is None if a complete run of those weights exists."""
    results = Path(args.results)
    # (spec, seed, headline): the untrained base and seed 0's warm-up are headline models,
    # queued after the arms (the comparison the experiment is about)
    models = [(a.spec, a.seed, a.headline) for a in arm_list]
    models += [(BASE_MODEL, 0, True), (f"{BASE_MODEL}-warmup", 0, True)]
    todo = []
    for task, extra, every_model in EVALS:
        if task not in tasks:
            continue
        if task in NEEDS_DATA_DIR and not args.data_dir:
            print(f"skipping {task}: needs --data-dir (e.g. ../shared/data)")
            continue
        for spec, seed, headline in models:
            if not (every_model or headline):
                continue

            def command(spec=spec, seed=seed, task=task, extra=extra) -> list[str] | None:
                state = _eval_state(results, spec, task)
                if state == "done":
                    return None
                cmd = ["eval", "--model", spec, "--tasks", task, *EVAL_ARGS, "--redact"]
                cmd += ["--output", str(results), *extra]
                cmd += ["--data-dir", args.data_dir] if args.data_dir else []
                cmd += ["--seed", str(seed)] if seed else []
                cmd += ["--overwrite"] if state == "stale" else []
                return calbench_command(*cmd)

            todo.append((f"eval-{spec}-{task}", spec, command))
    return todo


def run(args: argparse.Namespace) -> int:
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UsageError(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    known = [t for t, _, _ in EVALS]
    tasks = known if not args.tasks else args.tasks.split(",")
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UsageError(
            f"unknown eval task(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    seeds = parse_seeds(args.seeds)
    arm_list = arms(seeds, args.ablation)
    out = Path(args.out)
    r = Runner(out, args.jobs, args.dry_run)
    t0 = time.perf_counter()
    try:
        _stages(r, args, stages, seeds, tasks, arm_list)
    finally:
        total = time.perf_counter() - t0
        print(f"reproduce: {total / 60:.1f} min wall for stages {', '.join(stages)}")
        if not args.dry_run:
            _write_times(out, stages, seeds, total, r)
    return 0


def _stages(
    r: Runner,
    args: argparse.Namespace,
    stages: list[str],
    seeds: list[int],
    tasks: list[str],
    arm_list: list[Arm],
) -> None:
    out = r.out
    if "warmup" in stages:
        cores = os.cpu_count() or 1  # a warm-up runs alone
        with r.stage("warmup"):
            for s in seeds:
                name = warmup_name(s)
                if _trained(out / name / "adapter" / "calbench_train.json", None):
                    continue
                cmd = ["--model", BASE_MODEL, "--out", str(out / name), "--no-progress"]
                cmd += ["--threads", str(cores), *WARMUP_ARGS, "--seed", str(s)]
                r.run(name, calbench_command("train", "--method", "warmup", *cmd), threads=cores)
    if "rl" in stages and not args.dry_run:
        for s in seeds:
            check_warmup(out / warmup_name(s))
    if {"rl", "publish", "eval"} <= set(stages):
        with r.stage("+".join(x for x in STAGES if x in stages and x in PIPELINED)):
            _pipeline(r, args, stages, tasks, arm_list, seeds)
    else:  # the stages one after the other
        k = read_selection(out, published=0 not in seeds)
        if "rl" in stages:
            with r.stage("rl"):
                r.parallel_fns(
                    [lambda a=a: _train_in_snapshots(r, out, a) for a in arm_list if a.snapshots]
                )
        if "select" in stages:
            with r.stage("select"):
                k = select(r, out, arm_list)
        if "rl" in stages:
            with r.stage("rl"):
                _train_rest(r, out, arm_list, k)
        if "publish" in stages and not args.dry_run:
            with r.stage("publish"):
                if k is None:
                    raise RuntimeFailure("publish needs the select stage's step: run it first")
                publish(out, arm_list, k, warmup=0 in seeds)
        if "eval" in stages:
            with r.stage("eval"):
                evals = _evals(args, tasks, arm_list)
                r.parallel_fns([lambda n=n, c=c: r.run_if(n, c()) for n, _, c in evals])
    if "leaderboard" in stages:
        with r.stage("leaderboard"):
            results = Path(args.results)
            stale = [
                f"{spec}/{task}"
                for spec in REFERENCE_MODELS
                for task, _, _ in EVALS
                if _eval_state(results, spec, task) == "stale"
            ]
            if stale and not args.dry_run:  # the eval stage reruns them; until then, say so
                print(
                    f"leaderboard: note: {len(stale)} result(s) of other weights than the "
                    f"published adapter: {', '.join(stale)} (the eval stage reruns them)"
                )
            r.run(
                "leaderboard",
                calbench_command("leaderboard", str(results), "--out", args.leaderboard),
            )
            # the side-by-side reliability diagrams of seed 0's warm-up, RLVR and RLCR (and
            # PPO's where it was evaluated), per task
            for task in tasks:
                runs = [str(results / f"{BASE_MODEL}-{m}" / task / "tags") for m in PLOTTED]
                ppo = results / f"{BASE_MODEL}-rlcr-ppo" / task / "tags"
                runs += [str(ppo)] if (ppo / "metrics.json").is_file() else []
                if args.dry_run or all((Path(x) / "metrics.json").is_file() for x in runs):
                    png = Path(args.leaderboard) / "figures" / f"reference_{task}.png"
                    r.run(f"plot-{task}", calbench_command("plot", *runs, "--out", str(png)))


def _write_times(out: Path, stages: list[str], seeds: list[int], total: float, r: Runner) -> None:
    """This invocation's wall times, with every earlier invocation's kept under ``previous``."""
    f = out / "reproduce_times.json"
    previous: list = []
    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
        old = json.loads(f.read_text())
        previous = old.pop("previous", []) + [old]
    out.mkdir(parents=True, exist_ok=True)
    now = {"stages": stages, "seeds": seeds, "wall_s": total, "per_stage_s": r.stage_times}
    atomic_write_json(f, now | {"per_step_s": r.times, "previous": previous})

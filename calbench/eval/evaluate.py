"""``calbench eval``: run tasks through lm-eval, write calbench run folders.

Where each part lives: options and their checks in :mod:`calbench.eval.options`, the manifest's
fields in :mod:`calbench.eval.manifest`, one task's lm-eval call and its written files in
:mod:`calbench.eval.run_task`; this module runs the models one after another.

Flow (a newcomer can follow it top to bottom):

1. check ``--tasks``, ``--backend``, ``--elicitation`` and the judge once for all models
   (:func:`calbench.eval.options.check_settings`); unknown names exit 2 listing the valid ones;
   several comma-separated models run one after another through steps 2-4 (:func:`evaluate_all`);
2. resolve ``--model`` (:mod:`calbench.core.models`) and build its backend
   (:mod:`calbench.eval.backends`); per task, pick the run folder
   ``OUTPUT/<model>/<task>/<elicitation>/`` and lock it (:mod:`calbench.eval.runfolder`), refuse a
   folder holding a run of another model or settings unless ``--overwrite``, and mark the
   manifest ``running`` (:mod:`calbench.eval.manifest`);
3. call ``lm_eval.simple_evaluate`` with lm-eval's request cache in the run folder, keyed by the
   run's identity — every finished generation is committed to SQLite, so a killed run restarted
   with the same arguments regenerates nothing it had finished (:mod:`calbench.eval.run_task`);
4. turn lm-eval's logged samples into calbench records (:mod:`calbench.eval.harness`), compute the
   metric suite (:mod:`calbench.metrics`) and write ``samples.jsonl``, ``metrics.json`` and
   finally ``manifest.json`` (status ``complete``), each atomically
   (:func:`calbench.eval.run_task.run_task`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import ResolvedModel, resolve_model
from calbench.core.prompts import build_prompt
from calbench.core.records import RecordError
from calbench.eval import runfolder
from calbench.eval.backends import API_BACKENDS, build_backend
from calbench.eval.manifest import model_fields, model_info, settings_fields, task_manifest
from calbench.eval.options import add_arguments, check_settings, model_specs
from calbench.eval.registry import TaskInfo
from calbench.eval.run_task import (
    build_lm,
    generation_kwargs,
    quiet_lm_eval,
    run_task,
    token_counter,
)

# the command's interface, as calbench/cli.py loads it: add_arguments(parser), run(args) -> int
__all__ = ["add_arguments", "evaluate_all", "run"]


def run(args: argparse.Namespace) -> int:
    """``calbench eval``: evaluate every model (:func:`evaluate_all`); 0 when all completed."""
    evaluate_all(args)
    return 0


def evaluate_all(args: argparse.Namespace) -> list[Path]:
    """Evaluate every model of ``args.model`` on ``args.tasks``; the run folders, in order.

    ``calbench eval`` and :func:`calbench.evaluate` both come here. Settings shared by all models
    are checked first (a bad one exits 2 before any model loads). One model: its error passes
    through unchanged. Several: a model that fails is reported on stderr and the next one runs;
    at the end a UsageError (only usage errors) or RuntimeFailure names the failed models."""
    tasks, judge = check_settings(args)
    specs = model_specs(args.model)
    done: list[Path] = []
    failed: list[tuple[str, Exception]] = []
    for i, spec in enumerate(specs, 1):
        one = argparse.Namespace(**{**vars(args), "model": spec})
        if len(specs) == 1:
            return _evaluate_model(one, tasks, judge)
        print(f"calbench eval: model {i}/{len(specs)}: {spec}", file=sys.stderr, flush=True)
        try:
            done += _evaluate_model(one, tasks, judge)
        except (UsageError, RecordError, RuntimeFailure) as e:
            kind = "failed" if isinstance(e, RuntimeFailure) else "error"
            print(f"calbench eval: model {spec}: {kind}: {e}", file=sys.stderr, flush=True)
            failed.append((spec, e))
    if failed:
        names = ", ".join(s for s, _ in failed)
        ok = len(specs) - len(failed)
        msg = f"{len(failed)} of {len(specs)} models failed: {names} (errors above)" + (
            f"; the run folders of the other {ok} are complete" if ok else ""
        )
        if any(isinstance(e, RuntimeFailure) for _, e in failed):
            raise RuntimeFailure(msg)
        raise UsageError(msg)
    return done


def _evaluate_model(
    args: argparse.Namespace, tasks: list[TaskInfo], judge: dict | None
) -> list[Path]:
    """Evaluate the one model ``args.model`` on ``tasks``; its run folders."""
    t_start = time.time()

    # API backends take the model name as the server knows it; resolve it locally only for
    # a tokenizer (token counts, openai-completions' chat template), never require it.
    if args.backend in API_BACKENDS:
        try:
            model: ResolvedModel | None = resolve_model(args.model, hash_weights=False)
        except UsageError:
            model = None
    else:
        model = resolve_model(args.model)
    prefill = bool(build_prompt("?", args.elicitation).prefill)
    call = build_backend(
        args.backend,
        model,
        model_spec=args.model,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        prefill=prefill,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        device=args.device,
        dtype=args.dtype,
        tokenizer=args.tokenizer,
        max_retries=args.max_retries,
        timeout=args.timeout,
    )
    gen_kwargs = generation_kwargs(args, call)
    info = model_info(args, model)
    label = runfolder.model_label(info, args.backend)
    common = model_fields(args, call, label, info)
    settings = settings_fields(args, call)
    # What the run generates is fixed by its identity: the request cache is keyed by it, and a
    # folder holding another identity is refused (prepare), never silently reused.
    key = runfolder.identity_key(runfolder.run_identity({**common, **settings}))
    run_dirs = {
        t.name: runfolder.run_dir_for(args.output, label, t.name, args.elicitation) for t in tasks
    }
    rows = []
    with contextlib.ExitStack() as held:
        for t in tasks:  # every folder is locked and checked before the model is loaded
            held.enter_context(runfolder.exclusive(run_dirs[t.name]))
            runfolder.prepare(run_dirs[t.name], {**common, **settings}, args.overwrite)
        quiet_lm_eval()
        lm = build_lm(call)
        count_tokens = token_counter(args, model)
        for t in tasks:
            manifest = task_manifest(common, settings, t, judge, key)
            cache = runfolder.cache_dir(run_dirs[t.name], key)
            rows.append(
                run_task(
                    args,
                    lm,
                    call,
                    t,
                    run_dirs[t.name],
                    cache,
                    manifest,
                    gen_kwargs,
                    judge,
                    count_tokens,
                )
            )
    _summary_table(rows)
    print(f"calbench eval: done in {time.time() - t_start:.1f}s", file=sys.stderr)
    return [Path(r["run_dir"]) for r in rows]


def _summary_table(rows: list[dict[str, Any]]) -> None:
    def fmt(m: dict | None) -> str:
        if not m or m.get("value") is None:
            return "n/a"
        lo, hi = m.get("lo"), m.get("hi")
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        return f"{m['value']:.3f}{ci}"

    table = Table(title="calbench eval (95% bootstrap CIs; unparsed confidences dropped)")
    for col in ("task", "n", "parse rate", "accuracy", "mean conf", "ECE", "Brier", "AUROC"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in rows:
        m = r["metrics"]["metrics"]
        table.add_row(
            r["task"],
            str(r["metrics"]["n"]),
            f"{r['metrics']['coverage']:.2f}",
            fmt(m.get("accuracy")),
            fmt(m.get("mean_confidence")),
            fmt(m.get("ece")),
            fmt(m.get("brier")),
            fmt(m.get("auroc")),
        )
    Console(stderr=False, width=max(120, Console().width)).print(table)
    for r in rows:  # plain print: paths must not be wrapped or styled
        print(f"run folder ({r['task']}): {r['run_dir']}", flush=True)

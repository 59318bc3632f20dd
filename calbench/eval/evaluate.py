"""``calbench eval``: run tasks through lm-eval, write calbench run folders.

Flow (a newcomer can follow it top to bottom):

1. resolve ``--model`` (:mod:`calbench.core.models`), ``--tasks`` (:mod:`calbench.eval.registry`) and
   ``--backend`` (:mod:`calbench.eval.backends`); unknown names exit 2 listing the valid ones;
   several comma-separated models run one after another through steps 2-4 (:func:`evaluate_all`);
2. per task, pick the run folder ``OUTPUT/<model>/<task>/<elicitation>/`` and lock it
   (:mod:`calbench.eval.runfolder`), refuse a folder holding a run of another model or settings unless
   ``--overwrite``, and mark the manifest ``running``;
3. call ``lm_eval.simple_evaluate`` with lm-eval's request cache in the run folder, keyed by the
   run's identity — every finished generation is committed to SQLite, so a killed run restarted
   with the same arguments regenerates nothing it had finished;
4. turn lm-eval's logged samples into calbench records (:mod:`calbench.eval.harness`), compute the
   metric suite (:mod:`calbench.metrics`) and write ``samples.jsonl``, ``metrics.json`` and
   finally ``manifest.json`` (status ``complete``), each atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from calbench import __version__
from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import ResolvedModel, resolve_model, weights_hash
from calbench.core.prompts import ELICITATIONS, MULTI_PASS, build_prompt, template_sha256
from calbench.core.records import RecordError, atomic_write_json, git_commit, redact, write_jsonl
from calbench.core.runs import MANIFEST, METRICS, SAMPLES
from calbench.eval import runfolder
from calbench.eval.backends import (
    API_BACKENDS,
    BACKENDS,
    DEFAULT_TIMEOUT,
    BackendCall,
    build_backend,
    command_line,
)
from calbench.eval.backends.secrets import redact as mask_secrets
from calbench.eval.backends.secrets import strip_credentials
from calbench.eval.elicit import check_supported, second_pass
from calbench.eval.harness import TASKS_DIR, lmeval_samples_to_records
from calbench.eval.registry import TaskInfo, get_tasks
from calbench.metrics import summarize

GENERATED_TASK_SIZE = 500  # questions generated for offline tasks unless --limit asks for more
PACKAGES = (
    "torch",
    "transformers",
    "lm_eval",
    "peft",
    "vllm",
    "math-verify",
    "reasoning_gym",
    "datasets",
    "numpy",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="alias (smollm2-135m), local HF folder, PEFT adapter folder, or hub id; "
        "several separated by commas (a,b,c) run one after another, one run "
        "folder each: a failed model is reported and the others still run, "
        "then the command exits non-zero naming it",
    )
    p.add_argument("--tasks", required=True, help="comma-separated task names (calbench tasks)")
    p.add_argument("--backend", default="hf", help=f"one of {', '.join(BACKENDS)} (default hf)")
    p.add_argument(
        "--elicitation",
        default="tags",
        help=f"how confidence is asked for: {', '.join(ELICITATIONS)} (default tags)",
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N questions of each task")
    p.add_argument("--data-dir", help="local data folder (else $CALBENCH_DATA_DIR, else the hub)")
    p.add_argument("--output", default="results", help="results root (default results/)")
    p.add_argument("--batch-size", type=int, default=16, help="generation batch size (16)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="max generated tokens (256)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and generated tasks")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the contents of a run folder that holds a run of another "
        "model or other settings",
    )
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="env var holding the API key (never written anywhere)",
    )
    p.add_argument("--tokenizer", help="tokenizer for openai-completions / token counts")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", help="model dtype (default float32 on CPU, bfloat16 on CUDA)")
    p.add_argument(
        "--max-retries",
        type=int,
        default=5,
        help="API: retries of a failed request after its first attempt (5)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="API: seconds to wait for each request attempt (300)",
    )
    p.add_argument(
        "--redact",
        action="store_true",
        help="store SHA-256 hashes instead of question, gold and prompt text "
        "(use for runs you commit: keeps benchmark text out of git)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    p.add_argument(
        "--k", type=int, default=5, help="samples per question for --elicitation consistency (5)"
    )
    p.add_argument(
        "--sample-temperature",
        type=float,
        default=0.7,
        help="sampling temperature for --elicitation consistency (0.7)",
    )
    p.add_argument(
        "--judge-model", help="LLM judge model name (graders judge*; e.g. truthfulqa_gen, simpleqa)"
    )
    p.add_argument("--judge-base-url", help="OpenAI-compatible endpoint of the judge")
    p.add_argument(
        "--judge-api-key-env",
        default="OPENAI_API_KEY",
        help="env var holding the judge's API key (never written anywhere)",
    )


def _versions(backend: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "calbench": __version__}
    for pkg in PACKAGES:
        if pkg == "vllm" and backend != "vllm":
            continue
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _token_counter(args: argparse.Namespace, model: ResolvedModel | None):
    path = args.tokenizer or (model.path if model is not None else None)
    if path is None:
        return None
    try:
        # lazy: transformers +0.6-2 s at import (python -X importtime); regrade imports this
        # module, and API runs without a tokenizer never count
        from transformers import AutoTokenizer

        if args.tokenizer and model is None:
            with contextlib.suppress(UsageError):
                path = resolve_model(args.tokenizer, hash_weights=False).path
        tok = AutoTokenizer.from_pretrained(path)
    except Exception:  # token counts are a convenience; never fail a run over them
        return None

    def count(text: str) -> int:
        # Chat APIs log the prompt as a JSON message list: count it as the server renders it.
        if text.startswith('[{"role"'):
            try:
                msgs = json.loads(text)
                cont = msgs[-1]["role"] == "assistant"
                text = tok.apply_chat_template(
                    msgs,
                    tokenize=False,
                    continue_final_message=cont,
                    add_generation_prompt=not cont,
                )
            except Exception:
                pass
        return len(tok.encode(text, add_special_tokens=False))

    return count


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


def compute_metrics(records: list[dict], n_bootstrap: int, seed: int) -> dict:
    """The full metric suite of :mod:`calbench.metrics` over a run's records."""
    correct = [bool(r["correct"]) for r in records]
    conf = [r["confidence"] if r["confidence"] is not None else float("nan") for r in records]
    return summarize(
        correct, conf, n_bootstrap=n_bootstrap, seed=seed, ids=[r["id"] for r in records]
    )


class _ResumeNote(logging.Handler):
    """Surface lm-eval's request-cache count, so a resumed run says how much it reused."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Cached requests:"):
            print(f"calbench eval: resume check: {msg}", file=sys.stderr, flush=True)


def _quiet_lm_eval() -> None:
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    # lm-eval's API client leaves failed asyncio tasks behind when a server is down; asyncio then
    # prints "Task exception was never retrieved" tracebacks after calbench's own clear error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    cache_logger = logging.getLogger("lm_eval.api.model")
    cache_logger.setLevel(logging.INFO)
    cache_logger.propagate = False
    if not any(isinstance(h, _ResumeNote) for h in cache_logger.handlers):
        cache_logger.addHandler(_ResumeNote())


def _build_lm(call: BackendCall):
    # lazy: lm_eval +0.1 s at import (python -X importtime); `calbench regrade` imports this
    # module and runs no model
    import lm_eval.api.registry

    try:
        return lm_eval.api.registry.get_model(call.lm_eval_model).create_from_arg_obj(
            call.model_args,
            {"batch_size": call.batch_size, "max_batch_size": None, "device": None},
        )
    except Exception as e:
        where = f" for {call.endpoint}" if call.endpoint else ""
        raise RuntimeFailure(
            f"could not start the {call.lm_eval_model} backend{where}: {type(e).__name__}: {e}"
        ) from e


def judge_config(args: argparse.Namespace) -> dict | None:
    if args.judge_model or args.judge_base_url:
        if not (args.judge_model and args.judge_base_url):
            raise UsageError("--judge-model and --judge-base-url go together")
        _, user, password = strip_credentials(args.judge_base_url)
        if user or password:
            # the judge's settings travel in every task doc and the manifest: no secrets there
            raise UsageError(
                f"--judge-base-url {mask_secrets(args.judge_base_url)} holds credentials; "
                f"give the key through --judge-api-key-env instead"
            )
        return {
            "model": args.judge_model,
            "base_url": args.judge_base_url,
            "api_key_env": args.judge_api_key_env,
        }
    return None


def grader_used(grader: str, judge: dict | None) -> str:
    """The grader that actually decides correctness in a run (recorded in the manifest)."""
    if grader in ("judge_or_similarity", "judge_or_exact"):
        return "judge" if judge else grader.split("_or_")[1]
    return grader


def _evaluate_task(
    args: argparse.Namespace,
    lm: Any,
    call: BackendCall,
    task: TaskInfo,
    cache: Path,
    gen_kwargs: dict,
    judge: dict | None,
) -> list[dict]:
    # lazy: lm-eval's evaluator and task manager (datasets) +1.6-3.7 s at import (python -X
    # importtime); `calbench regrade` imports this module
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    size = max(GENERATED_TASK_SIZE, args.limit or 0)
    metadata: dict[str, Any] = {"elicitation": args.elicitation, "seed": args.seed, "size": size}
    if args.data_dir:
        metadata["data_dir"] = str(Path(args.data_dir).resolve())
    if judge:
        metadata["judge"] = judge
    paths = list(dict.fromkeys([str(TASKS_DIR), str(task.yaml_path.parent)]))
    tm = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
    try:
        out = simple_evaluate(
            model=lm,
            tasks=[task.lmeval_task],
            task_manager=tm,
            limit=args.limit,
            apply_chat_template=True,
            log_samples=True,
            bootstrap_iters=0,
            gen_kwargs=dict(gen_kwargs),
            use_cache=str(cache),
            random_seed=args.seed,
            numpy_random_seed=args.seed,
            torch_random_seed=args.seed,
            fewshot_random_seed=args.seed,
        )
    except UsageError:
        raise
    except Exception as e:
        if call.endpoint:  # the backend's RuntimeFailure says what the server did, and when
            what = (
                str(e)
                if isinstance(e, RuntimeFailure)
                else f"the server at {call.endpoint} failed: {type(e).__name__}: {e}"
            )
            raise RuntimeFailure(
                f"{what}. Finished answers are cached in {cache}*; rerun the "
                "same command to resume."
            ) from e
        raise RuntimeFailure(f"{task.name}: evaluation failed: {type(e).__name__}: {e}") from e
    if out is None:  # non-zero ranks under torchrun
        return []
    return out["samples"][task.lmeval_task]


def _model_info(args: argparse.Namespace, model: ResolvedModel | None) -> dict[str, Any]:
    info: dict[str, Any] = {"spec": args.model}
    if model is not None:
        info.update(model.to_dict())
        if model.kind == "adapter" and Path(model.path).is_dir():  # a hub base has no local hash
            info["base_weights_sha256"] = weights_hash(model.path)
    return info


def _evaluate_into(
    args: argparse.Namespace,
    lm: Any,
    call: BackendCall,
    task: TaskInfo,
    run_dir: Path,
    cache: Path,
    manifest: dict[str, Any],
    gen_kwargs: dict,
    judge: dict | None,
    count_tokens,
) -> dict[str, Any]:
    """Run one task into ``run_dir`` (whose lock the caller holds); return its summary row."""
    atomic_write_json(run_dir / MANIFEST, manifest)
    t0 = time.time()
    samples = _evaluate_task(args, lm, call, task, cache / "requests", gen_kwargs, judge)
    records = lmeval_samples_to_records(samples, task=task.name, count_tokens=count_tokens)
    if not records:
        raise RuntimeFailure(f"{task.name}: lm-eval returned no samples")
    if args.elicitation in MULTI_PASS:
        try:
            manifest["elicitation_settings"] = second_pass(
                args.elicitation,
                lm,
                records,
                samples,
                gen_kwargs=gen_kwargs,
                backend=args.backend,
                cache_dir=cache,
                seed=args.seed,
                k=args.k,
                temperature=args.sample_temperature,
            )
        except Exception as e:
            where = f" ({call.endpoint})" if call.endpoint else ""
            raise RuntimeFailure(
                f"{task.name}: {args.elicitation} pass failed{where}: {type(e).__name__}: {e}"
            ) from e
    data_hash = hashlib.sha256()
    for r in records:
        data_hash.update(json.dumps([r["id"], r["question"], r["gold"]]).encode())
    metrics = compute_metrics(records, args.bootstrap, args.seed)
    metrics["format"] = {
        "answer_parse_rate": sum(r["answer"] is not None for r in records) / len(records),
        "confidence_parse_rate": sum(r["confidence"] is not None for r in records) / len(records),
        "confidence_rescaled": sum(bool(r["parse"]["confidence_rescaled"]) for r in records),
    }
    write_jsonl(run_dir / SAMPLES, [redact(r) for r in records] if args.redact else records)
    atomic_write_json(run_dir / METRICS, metrics)
    manifest.update(
        {
            "status": "complete",
            "n": len(records),
            "data_sha256": data_hash.hexdigest(),
            "redacted": bool(args.redact),
            "finished_at": _now(),
            "wall_seconds": round(time.time() - t0, 2),
        }
    )
    atomic_write_json(run_dir / MANIFEST, manifest)
    return {"task": task.name, "metrics": metrics, "run_dir": str(run_dir)}


def model_specs(value: str) -> list[str]:
    """The models named by ``--model``: commas separate models (``a,b,c``), each stripped, a
    model named twice runs once. A value that is an existing path is one model even when its
    name holds a comma; any other empty entry (``a,,b``) is a usage error."""
    if "," in value and Path(value).expanduser().exists():
        return [value]
    specs = [s.strip() for s in value.split(",")]
    if not any(specs):
        raise UsageError("--model is empty")
    if not all(specs):
        raise UsageError(
            f"--model {value!r}: an empty name between commas "
            "(commas separate models: --model a,b,c)"
        )
    return list(dict.fromkeys(specs))


def run(args: argparse.Namespace) -> int:
    evaluate_all(args)
    return 0


def evaluate_all(args: argparse.Namespace) -> list[Path]:
    """Evaluate every model of ``args.model`` on ``args.tasks``; the run folders, in order.

    ``calbench eval`` and :func:`calbench.evaluate` both come here. Settings shared by all models
    are checked first (a bad one exits 2 before any model loads). One model: its error passes
    through unchanged. Several: a model that fails is reported on stderr and the next one runs;
    at the end a UsageError (only usage errors) or RuntimeFailure names the failed models."""
    tasks, judge = _check_settings(args)
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


def _check_settings(args: argparse.Namespace) -> tuple[list[TaskInfo], dict | None]:
    """Check the settings every model shares; the tasks to run and the judge config."""
    if args.backend not in BACKENDS:
        raise UsageError(f"unknown backend {args.backend!r}; choose from {', '.join(BACKENDS)}")
    if args.elicitation not in ELICITATIONS:
        raise UsageError(
            f"unknown elicitation {args.elicitation!r}; choose from {', '.join(ELICITATIONS)}"
        )
    check_supported(args.elicitation, args.backend)
    if args.elicitation == "consistency" and (args.k < 2 or args.sample_temperature <= 0):
        raise UsageError("--elicitation consistency needs --k >= 2 and --sample-temperature > 0")
    judge = judge_config(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tasks = get_tasks(list(dict.fromkeys(names)))  # a task named twice runs once
    if not tasks:
        raise UsageError("--tasks is empty")
    return tasks, judge


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
    gen_kwargs = {
        "max_gen_toks": args.max_new_tokens,
        "do_sample": False,
        "temperature": 0.0,
        **call.extra_gen_kwargs,
    }
    decoding = {
        "backend": args.backend,
        "max_new_tokens": args.max_new_tokens,
        "temperature": 0.0,
        "do_sample": False,
        "seed": args.seed,
        "dtype": call.model_args.get("dtype"),
        "batch_size": args.batch_size,
        "extra": call.extra_gen_kwargs,
    }
    if args.elicitation == "consistency":
        decoding.update(consistency_k=args.k, consistency_temperature=args.sample_temperature)
    model_info = _model_info(args, model)
    label = runfolder.model_label(model_info, args.backend)
    common: dict[str, Any] = {
        "status": "running",
        "calbench_version": __version__,
        "git_commit": git_commit(),
        "command": command_line(),  # URL credentials masked
        "model": label,
        "model_info": model_info,
        "backend": args.backend,
        "lm_eval_model": call.lm_eval_model,
        "model_args": call.public_args(),
        "endpoint": call.endpoint,
        "api_key_env": args.api_key_env if args.backend in API_BACKENDS else None,
    }
    settings: dict[str, Any] = {
        "elicitation": args.elicitation,
        "prompt_template_sha256": template_sha256(args.elicitation),
        "decoding": decoding,
        "seed": args.seed,
        "limit": args.limit,
        "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
        "versions": _versions(args.backend),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
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
        _quiet_lm_eval()
        lm = _build_lm(call)
        count_tokens = _token_counter(args, model)
        for t in tasks:
            manifest: dict[str, Any] = {
                **common,
                "task": t.name,
                "lm_eval_task": t.lmeval_task,
                "task_source": t.source,
                "grader": grader_used(t.grader, judge),
                "task_grader": t.grader,
                "judge": {k: v for k, v in (judge or {}).items()} or None,
                **settings,
                "run_identity_sha256": key,
                "started_at": _now(),
            }
            cache = runfolder.cache_dir(run_dirs[t.name], key)
            rows.append(
                _evaluate_into(
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

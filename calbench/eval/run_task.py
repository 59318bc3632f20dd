"""One task of one model into its run folder: :func:`run_task` asks lm-eval for the task's
samples (:func:`lmeval_samples`, with the request cache in the run folder), turns them into
calbench records (:mod:`calbench.eval.harness`), runs a multi-pass elicitation's second pass
(:mod:`calbench.eval.elicit`), computes the metric suite and writes ``samples.jsonl``,
``metrics.json`` and ``manifest.json`` (status ``complete``), each atomically. Also here: the
lm-eval model (:func:`build_lm`), its logging (:func:`quiet_lm_eval`) and token counts
(:func:`token_counter`)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.models import ResolvedModel, resolve_model
from calbench.core.prompts import MULTI_PASS
from calbench.core.records import atomic_write_json, redact, write_jsonl
from calbench.core.runs import MANIFEST, METRICS, SAMPLES, summarize_records
from calbench.eval.backends import BackendCall
from calbench.eval.elicit import second_pass
from calbench.eval.harness import TASKS_DIR, lmeval_samples_to_records
from calbench.eval.manifest import now
from calbench.eval.registry import TaskInfo

GENERATED_TASK_SIZE = 500  # questions generated for offline tasks unless --limit asks for more


def token_counter(
    args: argparse.Namespace, model: ResolvedModel | None
) -> Callable[[str], int] | None:
    """Counts a text's tokens with ``--tokenizer`` or the model's own; None when neither loads."""
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


def generation_kwargs(args: argparse.Namespace, call: BackendCall) -> dict[str, Any]:
    """lm-eval's ``gen_kwargs`` for the first pass: greedy, ``--max-new-tokens``, plus what the
    backend adds."""
    return {
        "max_gen_toks": args.max_new_tokens,
        "do_sample": False,
        "temperature": 0.0,
        **call.extra_gen_kwargs,
    }


def format_block(records: list[dict]) -> dict:
    """``metrics.json``'s ``format`` block: how often the answer and the confidence parsed, and
    how many confidences were rescaled (``calbench eval`` and ``calbench regrade`` both write it)."""
    n = len(records)
    return {
        "answer_parse_rate": sum(r["answer"] is not None for r in records) / n,
        "confidence_parse_rate": sum(r["confidence"] is not None for r in records) / n,
        "confidence_rescaled": sum(
            bool((r.get("parse") or {}).get("confidence_rescaled")) for r in records
        ),
    }


class ResumeNote(logging.Handler):
    """Surface lm-eval's request-cache count, so a resumed run says how much it reused."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Cached requests:"):
            print(f"calbench eval: resume check: {msg}", file=sys.stderr, flush=True)


def quiet_lm_eval() -> None:
    """Quiet lm-eval's and asyncio's logs, all but the request-cache count (:class:`ResumeNote`)."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    # lm-eval's API client leaves failed asyncio tasks behind when a server is down; asyncio then
    # prints "Task exception was never retrieved" tracebacks after calbench's own clear error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    cache_logger = logging.getLogger("lm_eval.api.model")
    cache_logger.setLevel(logging.INFO)
    cache_logger.propagate = False
    if not any(isinstance(h, ResumeNote) for h in cache_logger.handlers):
        cache_logger.addHandler(ResumeNote())


def build_lm(call: BackendCall) -> Any:
    """The lm-eval model ``call`` describes; a backend that will not start is a RuntimeFailure."""
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


def loader_metadata(
    elicitation: str, seed: int, limit: int | None, data_dir: str | None
) -> dict[str, Any]:
    """What ``calbench eval`` passes every task's loader (lm-eval's task ``metadata``); regrade
    loads a run's questions again with the same."""
    size = max(GENERATED_TASK_SIZE, limit or 0)
    metadata: dict[str, Any] = {"elicitation": elicitation, "seed": seed, "size": size}
    if data_dir:
        metadata["data_dir"] = str(Path(data_dir).resolve())
    return metadata


def lmeval_samples(
    args: argparse.Namespace,
    lm: Any,
    call: BackendCall,
    task: TaskInfo,
    cache: Path,
    gen_kwargs: dict,
    judge: dict | None,
) -> list[dict]:
    """lm-eval's logged samples of ``task`` (request cache at ``cache``); [] on the non-zero
    ranks of a torchrun."""
    # lazy: lm-eval's evaluator and task manager (datasets) +1.6-3.7 s at import (python -X
    # importtime); `calbench regrade` imports this module
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    metadata = loader_metadata(args.elicitation, args.seed, args.limit, args.data_dir)
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


def run_task(
    args: argparse.Namespace,
    lm: Any,
    call: BackendCall,
    task: TaskInfo,
    run_dir: Path,
    cache: Path,
    manifest: dict[str, Any],
    gen_kwargs: dict,
    judge: dict | None,
    count_tokens: Callable[[str], int] | None,
) -> dict[str, Any]:
    """Run one task into ``run_dir`` (whose lock the caller holds); return its summary row."""
    atomic_write_json(run_dir / MANIFEST, manifest)
    t0 = time.time()
    samples = lmeval_samples(args, lm, call, task, cache / "requests", gen_kwargs, judge)
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
    metrics = summarize_records(records, n_bootstrap=args.bootstrap, seed=args.seed)
    metrics["format"] = format_block(records)
    write_jsonl(run_dir / SAMPLES, [redact(r) for r in records] if args.redact else records)
    atomic_write_json(run_dir / METRICS, metrics)
    manifest.update(
        {
            "status": "complete",
            "n": len(records),
            "data_sha256": data_hash.hexdigest(),
            "redacted": bool(args.redact),
            "finished_at": now(),
            "wall_seconds": round(time.time() - t0, 2),
        }
    )
    atomic_write_json(run_dir / MANIFEST, manifest)
    return {"task": task.name, "metrics": metrics, "run_dir": str(run_dir)}

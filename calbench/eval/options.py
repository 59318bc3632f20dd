"""``calbench eval``'s options: the flags (:func:`add_arguments`) and the checks that run before
any model loads (:func:`check_settings`, :func:`model_specs`, :func:`judge_config`); a bad value
is a :class:`~calbench.core.errors.UsageError` (exit 2) naming the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

from calbench.core.errors import UsageError
from calbench.core.prompts import ELICITATIONS
from calbench.eval.backends import BACKENDS, DEFAULT_TIMEOUT
from calbench.eval.backends.secrets import redact as mask_secrets
from calbench.eval.backends.secrets import strip_credentials
from calbench.eval.elicit import check_supported
from calbench.eval.registry import TaskInfo, get_tasks


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


def check_settings(args: argparse.Namespace) -> tuple[list[TaskInfo], dict | None]:
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


def judge_config(args: argparse.Namespace) -> dict | None:
    """The LLM judge's settings from ``--judge-*`` (passed to the tasks and recorded in the
    manifest), or None when no judge is named."""
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

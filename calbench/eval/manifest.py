"""What a run folder's ``manifest.json`` records about a ``calbench eval`` run: the model and
backend (:func:`model_fields`), the settings that decide what it generates
(:func:`settings_fields`: elicitation, decoding, seed, package versions), and per task its grader
and start time (:func:`task_manifest`). :mod:`calbench.eval.run_task` adds the outcome."""

from __future__ import annotations

import argparse
import os
import platform
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from calbench import __version__
from calbench.core.models import ResolvedModel, weights_hash
from calbench.core.prompts import template_sha256
from calbench.core.records import git_commit
from calbench.eval.backends import API_BACKENDS, BackendCall, command_line
from calbench.eval.registry import TaskInfo

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


def versions(backend: str) -> dict[str, str | None]:
    """Python's, calbench's and :data:`PACKAGES`' versions (None: not installed; vLLM only for
    its backend)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "calbench": __version__}
    for pkg in PACKAGES:
        if pkg == "vllm" and backend != "vllm":
            continue
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def model_info(args: argparse.Namespace, model: ResolvedModel | None) -> dict[str, Any]:
    """``--model`` as given and, when it resolved locally, what it resolved to (with weight
    hashes)."""
    info: dict[str, Any] = {"spec": args.model}
    if model is not None:
        info.update(model.to_dict())
        if model.kind == "adapter" and Path(model.path).is_dir():  # a hub base has no local hash
            info["base_weights_sha256"] = weights_hash(model.path)
    return info


def grader_used(grader: str, judge: dict | None) -> str:
    """The grader that actually decides correctness in a run (recorded in the manifest)."""
    if grader in ("judge_or_similarity", "judge_or_exact"):
        return "judge" if judge else grader.split("_or_")[1]
    return grader


def model_fields(
    args: argparse.Namespace, call: BackendCall, label: str, info: dict[str, Any]
) -> dict[str, Any]:
    """The manifest's fields naming the model, the backend and the command (status
    ``running``)."""
    return {
        "status": "running",
        "calbench_version": __version__,
        "git_commit": git_commit(),
        "command": command_line(),  # URL credentials masked
        "model": label,
        "model_info": info,
        "backend": args.backend,
        "lm_eval_model": call.lm_eval_model,
        "model_args": call.public_args(),
        "endpoint": call.endpoint,
        "api_key_env": args.api_key_env if args.backend in API_BACKENDS else None,
    }


def settings_fields(args: argparse.Namespace, call: BackendCall) -> dict[str, Any]:
    """The manifest's fields recording how the run generates: elicitation, decoding, seed,
    limit, data folder, package versions and machine."""
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
    return {
        "elicitation": args.elicitation,
        "prompt_template_sha256": template_sha256(args.elicitation),
        "decoding": decoding,
        "seed": args.seed,
        "limit": args.limit,
        "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
        "versions": versions(args.backend),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def task_manifest(
    model: dict[str, Any],
    settings: dict[str, Any],
    task: TaskInfo,
    judge: dict | None,
    identity_key: str,
) -> dict[str, Any]:
    """The manifest of one task's run as it starts: ``model`` (:func:`model_fields`), the task
    and its grader, ``settings`` (:func:`settings_fields`) and the run identity's hash."""
    return {
        **model,
        "task": task.name,
        "lm_eval_task": task.lmeval_task,
        "task_source": task.source,
        "grader": grader_used(task.grader, judge),
        "task_grader": task.grader,
        "judge": {k: v for k, v in (judge or {}).items()} or None,
        **settings,
        "run_identity_sha256": identity_key,
        "started_at": now(),
    }

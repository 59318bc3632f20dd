"""``calbench tasks``: list every task (data source, size, grader, elicitations), show one
fully rendered example prompt (``calbench tasks show NAME``), or print the folder of the shipped
task plugins (``calbench tasks --path``, for ``lm_eval --include_path``)."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.grade import GRADER_RULES
from calbench.core.loaders import LOADERS
from calbench.core.models import resolve_model
from calbench.core.prompts import ELICITATIONS, build_prompt
from calbench.core.responses import RESPONSE_RULE
from calbench.eval.harness import TASKS_DIR
from calbench.eval.registry import available_tasks, get_tasks, task_metadata


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        choices=["list", "show"],
        default="list",
        help="list (default) or show NAME",
    )
    p.add_argument("name", nargs="?", help="task to show")
    p.add_argument("--elicitation", default="tags", help="elicitation to render (tags)")
    p.add_argument("--data-dir", help="local data folder (else $CALBENCH_DATA_DIR, else hub)")
    p.add_argument("--model", help="render with this model's chat template (alias or folder)")
    p.add_argument("--index", type=int, default=0, help="which question to show (0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--path",
        action="store_true",
        help="print the folder of the shipped task YAMLs and exit "
        '(lm_eval --include_path "$(calbench tasks --path)")',
    )


def _list(args: argparse.Namespace) -> int:
    tasks = available_tasks()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "lm_eval_task": t.lmeval_task,
                        "grader": t.grader,
                        "n_items": t.n_items,
                        "source": t.source,
                        "origin": t.origin,
                        "yaml": str(t.yaml_path),
                        "elicitations": list(ELICITATIONS),
                    }
                    for t in tasks.values()
                ],
                indent=2,
            )
        )
        return 0
    table = Table(title=f"calbench tasks (elicitations: {', '.join(ELICITATIONS)})")
    for col in ("task", "lm-eval name", "size", "grader", "data source"):
        table.add_column(col, overflow="fold")
    for t in sorted(tasks.values(), key=lambda t: t.name):
        table.add_row(t.name, t.lmeval_task, str(t.n_items or "?"), t.grader, t.source)
    console = Console(width=160)
    console.print(table)
    console.print("Graders:", highlight=False)
    for name in sorted({t.grader for t in tasks.values()} | {"math"}):
        if name in GRADER_RULES:
            console.print(f"  {name}: {GRADER_RULES[name]}", highlight=False, markup=False)
    console.print(f"Responses: {RESPONSE_RULE}", highlight=False, markup=False)
    return 0


def _check_index(task: str, index: int, n: int | None) -> None:
    """UsageError unless 0 <= index < n (n None: size unknown, only the sign is checked)."""
    if n == 0:
        raise UsageError(f"{task} has no questions, so there is nothing to show")
    if index < 0 or (n is not None and index >= n):
        valid = f"0..{n - 1}" if n is not None else "0 or more"
        raise UsageError(
            f"--index {index} is out of range for {task}: valid indices are {valid}"
            + (f" ({n} questions)" if n is not None else "")
        )


def _show(args: argparse.Namespace) -> int:
    if not args.name:
        raise UsageError("calbench tasks show NAME: give a task name (see `calbench tasks`)")
    if args.elicitation not in ELICITATIONS:
        raise UsageError(
            f"unknown elicitation {args.elicitation!r}; choose from {', '.join(ELICITATIONS)}"
        )
    (task,) = get_tasks([args.name])
    # Checked before loading: generated tasks (chain_sum, gsm_symbolic) build index + 1 items,
    # so an index past the evaluated set would build questions no evaluation uses, or fail.
    _check_index(task.name, args.index, task.n_items)
    meta = task_metadata(task)
    loader = LOADERS[meta.get("loader") or task.name]
    kwargs = {k: v for k, v in meta.items() if k not in ("loader", "calbench_name")}
    items = loader(task=task.name, data_dir=args.data_dir, **{**kwargs, "size": args.index + 1})
    _check_index(task.name, args.index, len(items))  # local data may hold fewer questions
    item = items[args.index]
    prompt = build_prompt(item["question"], args.elicitation)
    print(
        f"# {task.name} (lm-eval: {task.lmeval_task}), question {item['id']}, "
        f"elicitation {args.elicitation}, grader {task.grader}; gold: {item['gold']}\n"
    )
    if args.model:
        # lazy: transformers +0.6-2 s at import (python -X importtime); only --model needs it
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(resolve_model(args.model, hash_weights=False).path)
        msgs = list(prompt.messages)
        if prompt.prefill:
            msgs.append({"role": "assistant", "content": prompt.prefill})
        print(
            tok.apply_chat_template(
                msgs,
                tokenize=False,
                add_generation_prompt=not prompt.prefill,
                continue_final_message=bool(prompt.prefill),
            )
        )
    else:
        for m in prompt.messages:
            print(f"[{m['role']}]\n{m['content']}\n")
        if prompt.prefill:
            print(f"[assistant, prefilled]\n{prompt.prefill}")
    return 0


def _path(args: argparse.Namespace) -> int:
    if args.action == "show" or args.name:
        raise UsageError("--path prints the task folder and takes no action or task name")
    # A wheel built without its package data would print a folder lm_eval finds no tasks in.
    if not (TASKS_DIR / "_calbench" / "base.yaml").is_file():
        raise RuntimeFailure(
            f"the task plugins are missing from {TASKS_DIR} "
            f"(no _calbench/base.yaml): reinstall calbench"
        )
    print(TASKS_DIR)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.path:
        return _path(args)
    return _show(args) if args.action == "show" else _list(args)

"""Which tasks exist: every lm-eval YAML under ``tasks/`` whose ``metadata.calbench_name`` is
set is a calbench task. Reading the YAML directly (instead of building lm-eval's TaskManager)
keeps ``calbench eval --tasks typo`` fast and its error list exact."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from calbench.errors import UsageError
from calbench.harness import TASKS_DIR


@dataclass(frozen=True)
class TaskInfo:
    name: str  # calbench name (gsm8k)
    lmeval_task: str  # lm-eval name (calbench_gsm8k)
    yaml_path: Path
    grader: str
    source: str


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads lm-eval's ``!function module.fn`` tags as plain strings."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")


def tasks_dirs() -> list[Path]:
    extra = os.environ.get("CALBENCH_TASKS_PATH", "")
    return [TASKS_DIR] + [Path(p) for p in extra.split(os.pathsep) if p]


def available_tasks() -> dict[str, TaskInfo]:
    found: dict[str, TaskInfo] = {}
    for root in tasks_dirs():
        for path in sorted(root.rglob("*.yaml")):
            try:
                cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
            except yaml.YAMLError:
                continue
            meta = cfg.get("metadata") or {}
            name = meta.get("calbench_name")
            if not name or "task" not in cfg:
                continue
            found[name] = TaskInfo(name, cfg["task"], path, str(meta.get("grader", "")),
                                   str(meta.get("source", "")))
    return found


def get_tasks(names: list[str]) -> list[TaskInfo]:
    known = available_tasks()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown task(s) {', '.join(unknown)}; available: {', '.join(sorted(known))}"
        )
    return [known[n] for n in names]

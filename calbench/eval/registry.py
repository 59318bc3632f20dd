"""Which tasks exist: every lm-eval YAML under ``tasks/`` whose ``metadata.calbench_name`` is
set is a calbench task. Reading the YAML directly (instead of building lm-eval's TaskManager)
keeps ``calbench eval --tasks typo`` fast and its error list exact."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import yaml

from calbench.core.errors import UsageError
from calbench.eval.harness import TASKS_DIR


@dataclass(frozen=True)
class TaskInfo:
    name: str  # calbench name (gsm8k)
    lmeval_task: str  # lm-eval name (calbench_gsm8k)
    yaml_path: Path
    grader: str
    source: str
    n_items: int | None = None  # size of the full evaluation set, when known
    origin: str = "calbench"  # "calbench", or the distribution providing an entry point


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads lm-eval's ``!function module.fn`` tags as plain strings."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")


ENTRY_POINT_GROUP = "calbench.tasks"


def _entry_point_dirs() -> list[tuple[Path, str]]:
    """Task folders from installed packages: an entry point in group ``calbench.tasks`` names a
    folder path (str/Path), or a callable returning one or a list of them."""
    dirs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            obj = obj() if callable(obj) else obj
        except Exception as e:  # a broken plugin must not break calbench
            print(f"calbench: ignoring task plugin {ep.name!r}: {e}", file=sys.stderr)
            continue
        for p in obj if isinstance(obj, (list, tuple)) else [obj]:
            dirs.append((Path(p), ep.dist.name if ep.dist else ep.name))
    return dirs


def tasks_dirs() -> list[tuple[Path, str]]:
    """Where task YAMLs live: calbench's ``tasks/``, ``$CALBENCH_TASKS_PATH`` (os.pathsep
    separated), and the folders of ``calbench.tasks`` entry points."""
    extra = os.environ.get("CALBENCH_TASKS_PATH", "")
    return (
        [(TASKS_DIR, "calbench")]
        + [(Path(p), "CALBENCH_TASKS_PATH") for p in extra.split(os.pathsep) if p]
        + _entry_point_dirs()
    )


def available_tasks() -> dict[str, TaskInfo]:
    found: dict[str, TaskInfo] = {}
    for root, origin in tasks_dirs():
        for path in sorted(root.rglob("*.yaml")):
            try:
                cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
            except yaml.YAMLError:
                continue
            meta = cfg.get("metadata") or {}
            name = meta.get("calbench_name")
            if not name or "task" not in cfg:
                continue
            n = meta.get("n_items")
            found.setdefault(
                name,
                TaskInfo(
                    name,
                    cfg["task"],
                    path,
                    str(meta.get("grader", "")),
                    str(meta.get("source", "")),
                    int(n) if n is not None else None,
                    origin,
                ),
            )
    return found


def get_tasks(names: list[str]) -> list[TaskInfo]:
    known = available_tasks()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown task(s) {', '.join(unknown)}; available: {', '.join(sorted(known))}"
        )
    return [known[n] for n in names]


def task_metadata(task: TaskInfo) -> dict:
    """The ``metadata`` block of a task's YAML (what its loader receives)."""
    cfg = yaml.load(task.yaml_path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    return dict(cfg.get("metadata") or {})

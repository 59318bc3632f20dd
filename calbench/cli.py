"""The ``calbench`` command line. Each subcommand lives in the module named for its concept and
exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them up, imports
the module of the one command that runs (``calbench --help`` imports none: with what they import,
numpy/scipy, matplotlib, lm-eval, they cost seconds) and maps exceptions to exit codes:
0 ok, 2 usage/input error, 1 runtime failure."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Collection

from calbench import __version__
from calbench.core.errors import RuntimeFailure, UsageError
from calbench.core.records import RecordError

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("calbench.eval.evaluate", "evaluate a model's answers and verbalized confidences"),
    "score": (
        "calbench.report.score",
        "compute the metric suite from saved records (no model run)",
    ),
    "compare": (
        "calbench.report.compare",
        "paired comparison of two runs on their shared "
        "questions: metric differences with paired bootstrap CIs",
    ),
    "regrade": (
        "calbench.regrade",
        "grade saved runs' responses again with the current parser and graders (no model run)",
    ),
    "import": (
        "calbench.report.importer",
        "turn released outputs (RLCR .jsonl, lm-eval "
        "samples) into run folders, optionally regraded by calbench",
    ),
    "plot": ("calbench.report.plots", "reliability diagrams and risk-coverage plots of runs"),
    "leaderboard": ("calbench.report.leaderboard", "build the leaderboard from a results folder"),
    "tasks": ("calbench.eval.task_catalog", "list tasks, or show a rendered example prompt"),
    "train": ("calbench.train.cli", "train a model with calibration rewards (RLCR)"),
    "reproduce": ("calbench.reproduce", "train, evaluate and publish the reference models"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package (e.g. calbench.train) is absent
            found = False
        if found:
            out[name] = (module, help_)
    return out


def build_parser(
    commands: Collection[str] | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser and {command: module}. Only the modules of ``commands`` (default: all) are
    imported, for their flags; the other subcommands carry their one-line help, all that
    ``calbench --help`` shows."""
    parser = argparse.ArgumentParser(
        prog="calbench",
        description="Does a language model know what it doesn't know? "
        "Calibration benchmarks for LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"calbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        if commands is None or name in commands:
            importlib.import_module(module).add_arguments(p)
        modules[name] = module
    return parser, modules


def command_in(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (no top-level option
    takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_in(argv)
    parser, modules = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = importlib.import_module(modules[args.command])
    try:
        return int(mod.run(args) or 0)
    except (UsageError, RecordError) as e:
        print(f"calbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeFailure as e:
        print(f"calbench {args.command}: failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"calbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

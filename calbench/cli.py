"""The ``calbench`` command line. Each subcommand lives in the module named for its concept and
exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them up, imports
lazily (torch and lm-eval cost seconds) and maps exceptions to exit codes:
0 ok, 2 usage/input error, 1 runtime failure."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("calbench.eval.evaluate", "evaluate a model's answers and verbalized confidences"),
    "score": ("calbench.report.score", "compute the metric suite from saved records (no model run)"),
    "compare": ("calbench.report.compare", "paired comparison of two runs on their shared "
                "questions: metric differences with paired bootstrap CIs"),
    "regrade": ("calbench.regrade", "grade saved runs' responses again with the current parser "
                "and graders (no model run)"),
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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="calbench",
        description="Does a language model know what it doesn't know? "
        "Calibration benchmarks for LLMs.",
    )
    from calbench import __version__

    parser.add_argument("--version", action="version", version=f"calbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    from calbench.core.errors import RuntimeFailure, UsageError
    from calbench.core.records import RecordError

    parser, modules = build_parser()
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

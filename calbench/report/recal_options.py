"""The ``--recalibrate``, ``--recal-folds`` and ``--recal-seed`` flags of ``calbench score`` and
``calbench leaderboard``. Light (argparse only): building a parser imports no numpy or scipy, and
:mod:`calbench.report.recalibrated` is imported only when a flag is given."""

from __future__ import annotations

import argparse
from typing import Any


def add_recal_arguments(parser: argparse.ArgumentParser, recalibrate_help: str) -> None:
    """Add the three flags; ``recalibrate_help`` says what the command does with the methods."""
    parser.add_argument(
        "--recalibrate", default=None, metavar="METHOD[,METHOD]", help=recalibrate_help
    )
    parser.add_argument(
        "--recal-folds",
        type=int,
        default=None,
        metavar="K",
        help="cross-fitting folds for --recalibrate (default 5)",
    )
    parser.add_argument(
        "--recal-seed",
        type=int,
        default=None,
        metavar="S",
        help="seed of the cross-fitting folds (default 0)",
    )


def recal_keywords(args: argparse.Namespace, calibration_run: str | None = None) -> dict[str, Any]:
    """The build/score_files keywords of the flags (and score's ``--calibration-run``):
    :func:`calbench.report.recalibrated.cli_options`, or {} when none is given."""
    values = (args.recalibrate, args.recal_folds, args.recal_seed, calibration_run)
    if all(v is None for v in values):
        return {}
    # lazy: the recalibration module (numpy, scipy.optimize) costs ~0.7 s at import
    from calbench.report.recalibrated import cli_options

    return cli_options(*values)

"""What the ``calbench`` command imports before it does any work: ``calbench --help`` imports no
command's module, a command imports only its own, and the report commands (score, leaderboard,
plot) never import the model stack (torch, transformers, lm-eval, datasets, math-verify). Each
case runs in a fresh interpreter and reads ``sys.modules`` afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from calbench.cli import COMMANDS, command_in
from tests.conftest import REPO
from tests.fixtures.runs_make import make_results

MODEL_STACK = ("torch", "transformers", "lm_eval", "datasets", "math_verify")

PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from calbench.cli import main
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
    print(json.dumps({"rc": rc, "stdout": out.getvalue()[:4000], "modules": sorted(sys.modules)}))
""")


def _probe(args: list[str], cwd: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    got["modules"] = set(got["modules"])
    return got


def _command_modules(got: dict) -> set[str]:
    return {module for module, _ in COMMANDS.values()} & got["modules"]


def _model_stack(got: dict) -> set[str]:
    return set(MODEL_STACK) & got["modules"]


def test_command_in_finds_the_first_word():
    assert command_in(["score", "a.jsonl", "--seed", "1"]) == "score"
    assert command_in(["-h", "plot", "--out", "x.svg"]) == "plot"
    assert command_in(["--version"]) is None
    assert command_in([]) is None


def test_help_imports_no_command_module(tmp_path):
    got = _probe(["--help"], tmp_path)
    assert got["rc"] == 0
    for name in COMMANDS:
        assert name in got["stdout"], f"calbench --help does not list {name}"
    assert _command_modules(got) == set()
    assert _model_stack(got) == set()


@pytest.mark.parametrize(
    "command, flag", [("score", "--n-bootstrap"), ("leaderboard", "--no-diagrams")]
)
def test_a_report_command_imports_no_other_clients_command(command, flag, tmp_path):
    got = _probe([command, "--help"], tmp_path)
    assert got["rc"] == 0 and flag in got["stdout"]
    assert COMMANDS[command][0] in got["modules"]
    others = {m for m in _command_modules(got) if not m.startswith("calbench.report.")}
    assert others == set(), f"calbench {command} --help imported {others}"


def test_unknown_command_is_a_usage_error(tmp_path):
    got = _probe(["scor"], tmp_path)
    assert got["rc"] == 2 and _command_modules(got) == set()


@pytest.mark.parametrize("command", ["score", "leaderboard", "plot"])
def test_report_commands_start_without_the_model_stack(command, tmp_path):
    got = _probe([command, "--help"], tmp_path)
    assert got["rc"] == 0 and "usage: calbench" in got["stdout"]
    assert _model_stack(got) == set(), f"calbench {command} --help"


def test_report_commands_run_without_the_model_stack(tmp_path):
    runs = make_results(tmp_path / "results")
    got = _probe(
        ["score", str(runs["good"]), "--n-bootstrap", "20", "--output", str(tmp_path / "scores")],
        tmp_path,
    )
    assert got["rc"] == 0 and (tmp_path / "scores" / "scores.json").is_file()
    assert _model_stack(got) == set(), "calbench score"
    (sample,) = (REPO / "tests" / "fixtures" / "lmeval_output").rglob(
        "samples_calbench_synth_*.jsonl"
    )
    got = _probe(
        ["score", str(sample), "--n-bootstrap", "20", "--output", str(tmp_path / "scores-lmeval")],
        tmp_path,
    )
    assert got["rc"] == 0 and _model_stack(got) == set(), "calbench score (lm-eval samples)"
    got = _probe(["plot", str(runs["good"]), "--out", str(tmp_path / "r.svg")], tmp_path)
    assert got["rc"] == 0 and (tmp_path / "r.svg").is_file()
    assert _model_stack(got) == set(), "calbench plot"
    got = _probe(
        ["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / "lb"), "--no-diagrams"],
        tmp_path,
    )
    assert got["rc"] == 0 and (tmp_path / "lb" / "leaderboard.md").is_file()
    assert _model_stack(got) == set(), "calbench leaderboard"

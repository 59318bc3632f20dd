"""``kill -9`` of ``calbench eval`` at four moments, then the same command again: the run
completes with every record once (none lost, none twice), no temp file left behind, the same
``samples.jsonl`` and ``metrics.json`` bytes as an uninterrupted run, and the server is asked
only for the answers the killed run did not cache.

The moments: mid-generation (the server answers ``K`` of ``N`` requests and holds the rest; the
test kills the process group once the ``K`` answers are in lm-eval's request cache), and inside
the atomic write (:func:`calbench.core.records.atomic_write_text`, at its ``fsync``) of
``samples.jsonl``, of ``metrics.json`` and of the final, ``complete`` ``manifest.json``. No model
is loaded: :class:`tests.fault_server.FaultServer` serves :func:`answer`, which works out each
chain sum and gets about a third wrong, with a confidence drawn from the question, so the metrics
are not degenerate and every answer is a function of its request alone (order does not matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from calbench.core.records import read_samples
from calbench.core.runs import MANIFEST, METRICS, SAMPLES
from tests.conftest import REPO
from tests.fault_server import FaultServer

pytestmark = [
    pytest.mark.slow,  # nine `calbench eval` processes (~8 s each to start): about 1.5 min
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the kill hook reads /proc"),
]

N = 12  # questions (requests) per run
K = 5  # requests answered before the mid-generation kill
TASK = "chain_sum"
CLI = [sys.executable, "-m", "calbench.cli"]

# `calbench eval` with os.fsync replaced: when the file being synced is the temp file of an
# atomic write of argv[1] whose text contains argv[2], the process group is killed with SIGKILL
# right there (before the fsync and the rename), as a `kill -9` landing mid-write does. Only
# a group leader kills its group, so a mistake here can never reach pytest's own group.
DIE_IN_WRITE = """
import os, signal, sys
target, needle = sys.argv[1], sys.argv[2]
real_fsync = os.fsync
def fsync_or_die(fd):
    fd = fd if isinstance(fd, int) else fd.fileno()
    path = os.readlink(f"/proc/self/fd/{fd}")
    if os.path.basename(path).startswith(f".{target}."):
        with open(path, encoding="utf-8") as f:
            if needle in f.read():
                if os.getpgid(0) == os.getpid():
                    os.killpg(0, signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync_or_die
from calbench.cli import main
sys.exit(main(sys.argv[3:]))
"""


def answer(body: dict[str, Any]) -> str:
    """The fake model's reply to a chat request: the chain sum of the question, off by one for
    about a third of the questions, with a confidence of 0.1 to 0.9 (both picked by a hash of
    the question)."""
    question = body["messages"][-1]["content"]
    expr = re.search(r"problem: ([-+ 0-9]+)=", question)
    assert expr, f"not a chain_sum question: {question[:200]!r}"
    terms = re.findall(r"([-+]?)\s*(\d+)", expr.group(1))
    value = sum(-int(d) if sign == "-" else int(d) for sign, d in terms)
    h = int(hashlib.sha256(expr.group(1).encode()).hexdigest(), 16)
    value += h % 3 == 0
    return f"<answer>{value}</answer>\n<confidence>{h // 3 % 9 / 10 + 0.1:.1f}</confidence>"


def eval_args(srv: FaultServer, out: Path) -> list[str]:
    return [
        "eval",
        "--model",
        "m",
        "--backend",
        "openai-chat",
        "--base-url",
        srv.url,
        "--tasks",
        TASK,
        "--limit",
        str(N),
        "--max-retries",
        "0",  # a retried request would count twice
        "--output",
        str(out),
        "--bootstrap",
        "50",
    ]


def run_dir(out: Path) -> Path:
    return out / "m" / TASK / "tags"


def start(cmd: list[str]) -> subprocess.Popen:
    # its own session and process group, so the whole group can be killed and nothing else
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"`calbench eval` did not finish within {timeout} s: {err[-3000:]}")
    return proc.returncode, err


def cached_rows(run: Path) -> int:
    """Answers in the run's lm-eval request cache (0 while it does not exist yet)."""
    dbs = list((run / ".cache").glob("*/requests_rank*.db"))
    if not dbs:
        return 0
    try:
        con = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select count(*) from unnamed").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet, or locked by the writer this instant
        return 0


def questions(requests: list[dict]) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in requests]


def temp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted run: its records and its samples/metrics bytes."""
    out = tmp_path_factory.mktemp("reference")
    with FaultServer(ok_text=answer, lifetime=600) as srv:
        rc, err = finish(start(CLI + eval_args(srv, out)))
        assert rc == 0, err[-3000:]
        assert srv.count == N
    run = run_dir(out)
    records = read_samples(run / SAMPLES)
    assert len(records) == N
    # the fake answers are both right and wrong, with several confidences: metrics that a
    # lost, doubled or misplaced record would change
    assert 0 < sum(r["correct"] for r in records) < N
    assert len({r["confidence"] for r in records}) > 3
    return {
        "records": records,
        "samples": (run / SAMPLES).read_bytes(),
        "metrics": (run / METRICS).read_bytes(),
        "manifest": json.loads((run / MANIFEST).read_text()),
    }


def kill_mid_generation(srv: FaultServer, out: Path) -> None:
    """Answer K requests, hold every later one, and kill once the K answers are cached."""
    srv.set_script(["ok"] * K, then="hang")
    proc = start(CLI + eval_args(srv, out))
    run = run_dir(out)
    deadline = time.monotonic() + 300
    while cached_rows(run) < K and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"eval ended before the kill: {proc.communicate()[1][-3000:]}"
    assert cached_rows(run) == K, "the K answers never reached the request cache"
    os.killpg(proc.pid, signal.SIGKILL)
    rc, _ = finish(proc)
    assert rc == -signal.SIGKILL
    assert cached_rows(run) == K
    assert not (run / SAMPLES).exists() and not (run / METRICS).exists()
    assert json.loads((run / MANIFEST).read_text())["status"] == "running"


def kill_in_write(srv: FaultServer, out: Path, target: str, needle: str) -> None:
    """Run with every answer available and die inside the atomic write of ``target``."""
    srv.set_script([], then="ok")
    cmd = [sys.executable, "-c", DIE_IN_WRITE, target, needle, *eval_args(srv, out)]
    rc, err = finish(start(cmd))
    assert rc == -signal.SIGKILL, f"the run was not killed in the write of {target}: {err[-3000:]}"
    run = run_dir(out)
    assert cached_rows(run) == N
    stale = temp_files(run)
    assert len(stale) == 1 and stale[0].startswith(f".{target}."), stale  # killed mid-write
    written = {SAMPLES: (run / SAMPLES).exists(), METRICS: (run / METRICS).exists()}
    assert written == {  # the files written before the one the kill hit, and no other
        SAMPLES: target in (METRICS, MANIFEST),
        METRICS: target == MANIFEST,
    }
    assert json.loads((run / MANIFEST).read_text())["status"] == "running"


MOMENTS = {
    "mid-generation": None,
    "samples-write": (SAMPLES, ""),
    "metrics-write": (METRICS, ""),
    "manifest-write": (MANIFEST, '"status": "complete"'),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_then_resume_loses_and_repeats_nothing(tmp_path, reference, moment):
    t0 = time.monotonic()
    out = tmp_path / "out"
    run = run_dir(out)
    with FaultServer(ok_text=answer, hang_s=300, lifetime=600) as srv:
        if MOMENTS[moment] is None:
            kill_mid_generation(srv, out)
        else:
            kill_in_write(srv, out, *MOMENTS[moment])
        before = questions(srv.requests)[: cached_rows(run)] if moment == "mid-generation" else []
        sent_before, answered_before = srv.count, cached_rows(run)

        srv.set_script([], then="ok")
        rc, err = finish(start(CLI + eval_args(srv, out)))  # the same command, a healthy server
        assert rc == 0, err[-3000:]
        resumed = questions(srv.requests[-srv.count :]) if srv.count else []

    left = N - answered_before
    assert f"Cached requests: {answered_before}, Requests remaining: {left}" in err
    assert srv.count == left  # only what the killed run had not cached was asked again...
    if moment == "mid-generation":  # ...namely the questions it had not had answered
        assert len(set(before)) == K and not set(before) & set(resumed)
        assert len(set(before) | set(resumed)) == N
    records = read_samples(run / SAMPLES)  # validates every record; repeated ids are an error
    assert len(records) == N and len({r["id"] for r in records}) == N
    assert records == reference["records"]
    assert (run / SAMPLES).read_bytes() == reference["samples"]
    assert (run / METRICS).read_bytes() == reference["metrics"]  # the same metric values
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["status"] == "complete" and manifest["n"] == N
    assert manifest["data_sha256"] == reference["manifest"]["data_sha256"]
    assert sorted(p.name for p in run.iterdir()) == sorted([".cache", MANIFEST, METRICS, SAMPLES])
    print(
        f"\n{moment}: requests before kill {sent_before} (answered+cached {answered_before}), "
        f"on resume {srv.count}, records {len(records)}, {time.monotonic() - t0:.1f} s"
    )

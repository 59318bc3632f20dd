"""How ``calbench reproduce`` runs its steps: each an ordinary ``calbench`` command in a child
process with its output in ``OUT/logs/<name>.log`` and its wall time kept, ``--jobs`` of them side
by side with one torch thread each, or printed only (``--dry-run``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from calbench.core.errors import RuntimeFailure

# (key, function, keys of the jobs it waits for)
Job = tuple[str, Callable[[], None], tuple[str, ...]]


def calbench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "calbench.cli", *args]


class Runner:
    def __init__(self, out: Path, jobs: int, dry_run: bool):
        self.out, self.jobs, self.dry_run = out, max(1, jobs), dry_run
        self.logs = out / "logs"
        self.times: dict[str, float] = {}  # per command
        self.stage_times: dict[str, float] = {}

    def run(self, name: str, cmd: list[str], threads: int | None = None) -> None:
        shown = " ".join(["calbench", *cmd[3:]])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}", flush=True)
        if self.dry_run:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads or self.threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
        t0 = time.perf_counter()
        with open(self.logs / f"{name}.log", "a") as log:
            log.write(f"\n$ {shown}\n")
            log.flush()
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.times[name] = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeFailure(f"{name} failed (exit {rc}); see {self.logs / name}.log")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {self.times[name]:.0f} s", flush=True)

    @property
    def threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.jobs)

    def run_if(self, name: str, cmd: list[str] | None) -> None:
        """:meth:`run`, unless there is nothing to run (``cmd`` None)."""
        if cmd is not None:
            self.run(name, cmd)

    def graph(self, jobs: list[Job]) -> None:
        """Run ``(key, fn, after)`` jobs on ``jobs`` workers: a job is ready once every job
        keyed in ``after`` has finished (keys no job has count as finished), and each free
        worker takes the first ready job in list order — so evals of a trained model run while
        other arms still train. A job whose dependency failed is skipped (and so on down the
        line); the others run; the first failure is raised at the end. A dry run calls every
        job in list order."""
        if self.dry_run:
            for _, fn, _ in jobs:
                fn()
            return
        keys = {key for key, _, _ in jobs}
        ok: dict[str, bool] = {}
        pending, running = list(jobs), {}
        errors: list[BaseException] = []

        def failed(job: Job) -> str | None:
            return next((d for d in job[2] if ok.get(d) is False), None)

        with ThreadPoolExecutor(self.jobs) as pool:
            while pending or running:
                skipped = True
                while skipped:  # a failure skips its dependents, theirs, and so on
                    skipped = [j for j in pending if failed(j)]
                    for job in skipped:
                        print(f"{job[0]}: skipped, {failed(job)} failed", flush=True)
                        pending.remove(job)
                        ok[job[0]] = False
                ready = [j for j in pending if all(d not in keys or ok.get(d) for d in j[2])]
                for job in ready[: self.jobs - len(running)]:
                    pending.remove(job)
                    running[pool.submit(job[1])] = job[0]
                if not running:
                    if pending:  # what is left waits on jobs that never finish: a cycle
                        names = [j[0] for j in pending]
                        raise RuntimeFailure(f"jobs wait on each other: {names}")
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    key = running.pop(f)
                    ok[key] = f.exception() is None
                    if f.exception() is not None:
                        print(f"{key}: failed: {f.exception()}", flush=True)
                        errors.append(f.exception())
        if errors:
            raise errors[0]

    def parallel(self, named: list[tuple[str, list[str]]]) -> None:
        self.parallel_fns([lambda n=n, c=c: self.run(n, c) for n, c in named])

    def parallel_fns(self, fns: list[Callable[[], None]]) -> None:
        if not fns:
            return
        if self.dry_run:  # nothing to wait for: print the commands in order
            for fn in fns:
                fn()
            return
        with ThreadPoolExecutor(self.jobs) as pool:
            for f in [pool.submit(fn) for fn in fns]:
                f.result()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_times[name] = self.stage_times.get(name, 0.0) + time.perf_counter() - t0

"""Exclusive use of a run folder: ``calbench eval``, ``calbench regrade`` and ``calbench import``
hold ``<run>/.cache/run.lock`` (``fcntl.flock``) while they read and write it, so a second
process on the same folder stops with exit 2 naming the holder instead of interleaving writes.
The kernel drops the lock when its holder dies, so a killed process never blocks the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from calbench.core.errors import UsageError

LOCK = Path(".cache") / "run.lock"


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['started_at']}: {info['command']}"
    return "holder unknown"


@contextlib.contextmanager
def exclusive(run_dir: Path, command: str, advice: str = "wait for it to finish") -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block, recording ``command`` (with any
    credentials already masked) as the holder; UsageError naming the holder when another process
    has it. The lock file is never removed (removing it would let two processes lock two
    different files)."""
    path = run_dir / LOCK
    if path.parent.is_symlink():  # the run's caches and lock belong inside the run folder
        raise UsageError(f"{path.parent} is a symlink; remove it (it is only a cache)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:  # read-only folder, too many open files, ...
        raise UsageError(f"{path}: cannot open the run folder's lock ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{run_dir} is in use by another calbench process ({_holder(fd)}); {advice}"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # releases the flock

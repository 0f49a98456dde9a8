"""One writer at a time on an SQLite file, queued in the kernel instead of in SQLite's busy sleeps.

SQLite allows one writer at a time, and a connection that finds the database locked waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries: under a steady
stream of short writes from several processes those sleeps, not the writes, set the pace. A
writer that first takes an exclusive flock on a file next to the database waits in the kernel
instead, and starts the moment the last writer lets go. The kernel lets go for a process that dies.
"""

from __future__ import annotations

import fcntl
import os


class WriteLock:
    """An exclusive flock on `<database>.write-lock`, taken and released around each write."""

    def __init__(self, database: str) -> None:
        self.path = f"{database}.write-lock"
        self.fd: int | None = None
        self.pid = 0
        self.held = False

    def acquire(self) -> None:
        if self.fd is None or self.pid != os.getpid():
            # A forked child opens its own: a lock belongs to an open file, which fork() shares,
            # so through the parent's descriptor both processes would count as the holder.
            self.fd, self.pid, self.held = (
                os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600),
                os.getpid(),
                False,
            )
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held and self.fd is not None and self.pid == os.getpid():
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.held = False

    def close(self) -> None:
        self.release()
        if self.fd is not None and self.pid == os.getpid():
            os.close(self.fd)
        self.fd = None

"""Run the web server and the worker side by side, and stop them together."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def run_together(*commands: list[str], grace: float = 15, pass_fds: tuple[int, ...] = ()) -> int:
    """Run the processes until Ctrl-C or until one exits, then stop them all.

    Each child leads its own process group, so Ctrl-C in the terminal reaches only
    this process and each child gets exactly one SIGTERM from here. django-q2's
    cluster can deadlock when SIGINT and SIGTERM arrive within a millisecond of each
    other (its handler re-enters a multiprocessing Event), which is what a group-wide
    Ctrl-C followed by our SIGTERM used to do. A child that outlives the grace period
    is killed together with everything it started. pass_fds (listening sockets) are
    inherited by every child and closed here.
    """
    stop = {"asked": False}

    def ask_to_stop(signum: int, frame: object) -> None:
        stop["asked"] = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, ask_to_stop)
    processes = [
        subprocess.Popen(command, process_group=0, preexec_fn=stop_when_parent_dies, pass_fds=pass_fds)
        for command in commands
    ]
    for fd in pass_fds:  # handed over: a socket left open here would keep taking connections nobody accepts
        os.close(fd)
    while not stop["asked"] and all(p.poll() is None for p in processes):
        time.sleep(0.2)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        kill_group(process.pid)
        process.wait()
    return 0 if stop["asked"] else 1


def stop_when_parent_dies() -> None:
    """In the child: get SIGTERM if serve itself is killed, since Ctrl-C no longer reaches it."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def kill_group(pgid: int) -> None:
    """Kill whatever is left in a child's process group (its own children included)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass

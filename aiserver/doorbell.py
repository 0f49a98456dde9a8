"""Doorbells: wake a waiting process at once instead of at its next poll, without a server.

A process that waits binds a Unix datagram socket in a folder; one that has news sends a byte
to every socket there. A bell whose process is gone is taken down by the first ringer that
finds nobody listening. Polls stay as the fallback, so a lost bell costs only their delay.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

# Unix socket paths are limited to 107 bytes; a longer folder keeps the plain poll.
MAX_SOCKET_PATH = 107


def bind(folder: Path, name: str) -> socket.socket | None:
    """This process's bell in folder (non-blocking), or None if its path would be too long."""
    path = folder / f"{name}.sock"
    if len(str(path)) > MAX_SOCKET_PATH:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bell.bind(str(path))
    bell.setblocking(False)
    return bell


def ring(folder: Path) -> None:
    """Wake every process with a bell in folder."""
    if not folder.is_dir():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in folder.glob("*.sock"):
            try:
                sender.sendto(b"!", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its process is gone
            except OSError:
                pass  # a full queue of bells rings anyway


def silence(bell: socket.socket) -> None:
    """Take every ring waiting on the bell."""
    with contextlib.suppress(BlockingIOError, OSError):
        while bell.recv(64):
            pass


def pid_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}"

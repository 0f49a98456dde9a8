"""Start the whole server for real (`manage.py serve`: daphne and the django-q2 worker).

Tests that need real processes use this: the embedded configuration gets a fresh
data folder, the scale-out pass a throwaway PostgreSQL database and the Redis the
pass runs against.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[str]
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        """Run a management command against this server's database; returns its stdout."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_database() -> Iterator[str]:
    """Empty for SQLite; in the scale-out pass a fresh PostgreSQL database, dropped afterwards."""
    base = os.environ.get("DATABASE_URL", "")
    if not base:
        yield ""
        return
    import psycopg

    name = f"live_{os.getpid()}_{free_port()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def live_server(data_dir: Path, **extra_env: str) -> Iterator[LiveServer]:
    """`manage.py serve` on a free port, stopped (with its children) at the end."""
    with scratch_database() as database_url:
        port = free_port()
        env = dict(os.environ, DATA_DIR=str(data_dir), PORT=str(port), **extra_env)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        server = LiveServer(f"http://127.0.0.1:{port}", process, env)
        try:
            wait_until_serving(server)
            yield server
        finally:
            stop(process)


def wait_until_serving(server: LiveServer, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{server.output()}")
        try:
            httpx.get(server.url + "/admin/login/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"serve did not answer within {seconds:g} s")


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to serve, then kill whatever is left in its session (its children lead their own groups)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
    process.wait()

"""The real server (`manage.py serve`: daphne and the django-q2 cluster), started and stopped from outside.

A configuration's state lives in a "store": a temporary DATA_DIR (embedded: SQLite in it), or
for scale-out also a scratch PostgreSQL database and a flushed Redis database. Servers are
started in their own session, and every process of that session is killed when they stop.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MANAGE = str(ROOT / "manage.py")
ADMIN_PASSWORD = "bench-admin-pw-1"
# Variables of the caller's environment that would point the server somewhere else.
FOREIGN = (
    "DATABASE_URL",
    "REDIS_URL",
    "MEDIA_ROOT",
    "CHANNELS_DB",
    "DJANGO_SETTINGS_MODULE",
    "OLLAMA_URLS",
    "COMFYUI_URLS",
    "WORKERS",
    "PORT",
    "HOST",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DEBUG",
)
START_SECONDS = 90
STOP_SECONDS = 8


class ServerFailed(RuntimeError):
    """A management command or the server itself did not work; the message says why."""


@dataclass(frozen=True)
class AgentSpec:
    """One agent to register: `manage.py agent add ollama URL --concurrency N --name NAME`."""

    name: str
    url: str
    concurrency: int


# --- stores ----------------------------------------------------------------------------------


def base_env(data_dir: Path) -> dict[str, str]:
    """This environment, cleaned of anything that would point elsewhere, with the bench's settings."""
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    return env | {
        "DATA_DIR": str(data_dir),
        "LOCAL_AGENT": "0",
        "API_RATE_LIMIT_PER_MINUTE": "0",
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def embedded_store() -> Iterator[dict[str, str]]:
    """A fresh DATA_DIR: SQLite, the ORM broker and the SQLite channel layer."""
    with tempfile.TemporaryDirectory(prefix="bench-engine-embedded-") as data_dir:
        yield base_env(Path(data_dir))


def scaleout_unavailable(database_url: str, redis_url: str) -> str:
    """Why the scale-out configuration cannot run here ("" when PostgreSQL and Redis answer)."""
    import psycopg
    import redis

    try:
        psycopg.connect(database_url, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"PostgreSQL at {database_url} does not answer: {error}"
    try:
        redis.Redis.from_url(redis_url, socket_timeout=3).ping()
    except redis.RedisError as error:
        return f"Redis at {redis_url} does not answer: {error}"
    return ""


@contextmanager
def scaleout_store(database_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """A scratch PostgreSQL database on database_url's server (dropped at the end) and a flushed Redis db."""
    import psycopg
    import redis

    name = f"bench_{os.getpid()}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-engine-scaleout-") as data_dir:
            env = base_env(Path(data_dir))
            yield env | {"DATABASE_URL": database_url.rsplit("/", 1)[0] + "/" + name, "REDIS_URL": redis_url}
    finally:
        queue.flushdb()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- management commands ------------------------------------------------------------------------


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `manage.py ARGS` against the store in env; returns its standard output."""
    try:
        result = subprocess.run(
            [sys.executable, MANAGE, *args],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ServerFailed(f"manage.py {' '.join(args)} took longer than {timeout:g} s") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise ServerFailed(f"manage.py {' '.join(args)} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def register_agents(env: dict[str, str], agents: Iterable[AgentSpec]) -> None:
    """`manage.py agent add` for each agent, which also checks it (so a running server can use it at once)."""

    def add(agent: AgentSpec) -> str:
        return manage(
            env,
            "agent",
            "--skip-checks",
            "add",
            "ollama",
            agent.url,
            "--name",
            agent.name,
            "--concurrency",
            str(agent.concurrency),
        )

    # Each command is a Django start-up (about a second of CPU); two cores run two or three at once.
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(add, agents))


def remove_agents(env: dict[str, str], names: Iterable[str]) -> None:
    manage(env, "agent", "--skip-checks", "remove", *names)


# --- the running server -------------------------------------------------------------------------


@dataclass
class Memory:
    """Resident memory (VmRSS) of the web process and of the whole django-q2 cluster, in MB."""

    web_mb: float
    workers_mb: float
    worker_processes: int
    # PSS: each page shared by n processes (forked from one parent) counts 1/n in each, so the
    # sum is what the tree takes from the machine; the VmRSS sum counts shared pages n times.
    workers_pss_mb: float = 0.0


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def logged_errors(self) -> tuple[int, str]:
        """How many exceptions serve's output shows, and the last one (the server logs what a 500 hides)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        errors = re.findall(r"^[A-Za-z_][\w.]*(?:Error|Exception): .*$", text, re.MULTILINE)
        return len(errors), errors[-1][:160] if errors else ""

    def roles(self) -> dict[str, int]:
        """The pids of daphne and of each process of the django-q2 cluster, by a short name."""
        table = process_table()
        below = descendants(self.process.pid, table)
        named = {f"web{pid}": pid for pid in below if "daphne" in table[pid].command}
        return named | {f"q{pid}": pid for pid in below if "qcluster" in table[pid].command}

    def memory(self) -> Memory:
        """VmRSS of daphne, and the summed VmRSS of the qcluster process and everything below it."""
        table = process_table()
        below = descendants(self.process.pid, table)
        web = [pid for pid in below if "daphne" in table[pid].command]
        cluster = [pid for pid in below if "qcluster" in table[pid].command]
        roots = [pid for pid in cluster if table[pid].parent not in cluster]
        workers = [pid for root in roots for pid in [root, *descendants(root, table)]]
        return Memory(sum(map(rss_mb, web)), sum(map(rss_mb, workers)), len(workers), sum(map(pss_mb, workers)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(env: dict[str, str], label: str, workers: int | None = None) -> Iterator[Server]:
    """`manage.py serve` on a free port (WORKERS=workers if given), stopped with all its processes at the end."""
    port = free_port()
    env = env | {"PORT": str(port)} | ({"WORKERS": str(workers)} if workers else {})
    log = Path(env["DATA_DIR"]) / f"serve-{label}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, MANAGE, "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", env, process, log)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop(process)


def wait_until_serving(server: Server) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerFailed(f"serve exited early (exit {server.process.returncode}):\n{server.log_tail()}")
        try:
            httpx.get(server.url + "/accounts/login/", timeout=2, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise ServerFailed(f"serve did not answer within {START_SECONDS} s:\n{server.log_tail()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to serve (it stops its children), then SIGKILL to whatever is left of its session."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    for pid, info in process_table().items():
        if info.session == process.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    process.wait()


# --- /proc ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    parent: int
    session: int
    command: str


def process_table() -> dict[int, ProcessInfo]:
    """Every process we can see: its parent, session and command line (Linux /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        # The command name in parentheses may hold spaces; the fields after it do not.
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = ProcessInfo(parent=int(fields[1]), session=int(fields[3]), command=command)
    return table


def descendants(pid: int, table: dict[int, ProcessInfo]) -> list[int]:
    children = [child for child, info in table.items() if info.parent == pid]
    return [found for child in children for found in [child, *descendants(child, table)]]


def rss_mb(pid: int) -> float:
    return proc_mb(pid, "status", "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional set size (Linux's smaps_rollup): resident pages, shared ones divided among their sharers."""
    return proc_mb(pid, "smaps_rollup", "Pss:")


def proc_mb(pid: int, name: str, field: str) -> float:
    """A kB field of /proc/<pid>/<name>, in MB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0

"""A real cluster for crash tests: one web process and django-q2 worker clusters that tests kill.

Each piece is its own process on a fresh database (SQLite in a scratch folder, or a throwaway
PostgreSQL database in the scale-out pass), so a test can SIGKILL the process that runs a job,
or every process, and start new ones, the way a crash, an OOM kill or a reboot would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from tests.live_server import free_port, scratch_database

BASE_DIR = Path(settings.BASE_DIR)


@dataclass
class Callbacks:
    """A ReplyTo receiver on loopback that records every delivery it gets."""

    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def by_ref_id(self) -> dict[str, list[dict[str, Any]]]:
        seen: dict[str, list[dict[str, Any]]] = {}
        with self.lock:
            for delivery in self.received:
                seen.setdefault(delivery["refId"], []).append(delivery)
        return seen


@contextmanager
def callback_receiver() -> Iterator[Callbacks]:
    callbacks = Callbacks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with callbacks.lock:
                callbacks.received.append({**body, "key": self.headers.get("Idempotency-Key", "")})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    callbacks.url = f"http://127.0.0.1:{server.server_address[1]}/done"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield callbacks
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Cluster:
    env: dict[str, str]
    logs: Path
    web_url: str = ""
    key: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def python(self, code: str) -> Any:
        """Run Django code against the cluster's database; returns what it prints, as JSON."""
        return json.loads(self.manage("shell", "-c", code).splitlines()[-1])  # after any log lines

    def start(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                command, cwd=BASE_DIR, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.stack.callback(stop, process)
        self.processes.append(process)
        return process

    def start_web(self) -> None:
        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aiserver.asgi:application"]
        self.start(daphne, "web")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.web_url + "/accounts/login/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the web process did not answer")

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self.start([sys.executable, "manage.py", "qcluster"], f"worker-{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def kill_everything(self) -> None:
        """SIGKILL every process of the cluster at once, as a power cut would."""
        for process in self.processes:
            os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            kill_session(process)
        self.processes.clear()
        self.workers.clear()

    def submit(self, client: httpx.Client, reply_to: str, **fields: str) -> dict[str, Any]:
        files = {"image": ("red.png", red_png(), "image/png")}
        data = {"Model": "llava:7b", "ReplyTo": reply_to, **fields}
        answer = client.post(self.web_url + "/api/QueueImageToText", data=data, files=files, timeout=30)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def jobs(self) -> list[dict[str, Any]]:
        return list(
            self.python(
                "import json; from imagetotext.models import Job; "
                "print(json.dumps(list(Job.objects.order_by('pk').values("
                "'pk', 'ref_id', 'state', 'attempts', 'status', 'error', 'lease_until', 'agent_id')), default=str))"
            )
        )

    def api(self) -> httpx.Client:
        return httpx.Client(headers={"Authorization": f"Bearer {self.key}"})


@contextmanager
def cluster(tmp_path: Path, fake_urls: list[str], concurrency: int = 1, **extra_env: str) -> Iterator[Cluster]:
    """A migrated database with an admin, an API key and one Ollama agent per fake; no processes yet but the web."""
    with ExitStack() as outer:
        database_url = outer.enter_context(scratch_database())
        env = dict(
            os.environ,
            DATA_DIR=str(tmp_path / "data"),
            SECRET_KEY="crash-test-key",
            WORKERS="1",
            LOCAL_AGENT="0",
            API_RATE_LIMIT_PER_MINUTE="0",
            CALLBACK_ALLOW_PRIVATE="1",
            JOB_LEASE_SECONDS="2",
            PYTHONUNBUFFERED="1",
            **extra_env,
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        logs = tmp_path / "logs"
        logs.mkdir()
        running = Cluster(env, logs)
        outer.enter_context(running.stack)
        running.manage("migrate", "--verbosity", "0")
        for n, url in enumerate(fake_urls):
            running.manage("agent", "add", "ollama", url, "--name", f"gpu{n}", "--concurrency", str(concurrency))
        running.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_superuser('admin', '', 'x')",
        )
        running.key = running.manage("createapikey", "crash", "--owner", "admin", "--verbosity", "0")
        running.start_web()
        yield running


def descendants(pid: int) -> list[int]:
    """Every process below pid (django-q2's sentinel, pusher, monitor, workers...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def connected_to(port: int) -> set[int]:
    """Pids holding an established TCP connection to 127.0.0.1:port (a backend request in flight)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        remote, state, inode = parts[2], parts[3], parts[9]
        if state == "01" and int(remote.split(":")[1], 16) == port:  # 01: ESTABLISHED
            inodes.add(f"socket:[{inode}]")
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    pids.add(int(entry.name))
                    break
        except OSError:
            continue
    return pids


def job_runners(workers: list[subprocess.Popen[bytes]], ports: list[int]) -> set[int]:
    """The worker processes that hold a connection to one of these backends."""
    below = {pid for worker in workers for pid in descendants(worker.pid)}
    return below & {pid for port in ports for pid in connected_to(port)}


def kill_job_runners(worker: subprocess.Popen[bytes], port: int) -> list[int]:
    """SIGKILL the processes of this worker cluster that talk to the backend on port; returns their pids."""
    victims = sorted(job_runners([worker], [port]))
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return victims


def kill_session(process: subprocess.Popen[bytes]) -> None:
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
    process.wait()


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    kill_session(process)


def until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(0.05)


def red_png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    return buffer.getvalue()

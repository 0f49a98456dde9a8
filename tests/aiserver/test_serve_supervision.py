"""serve's supervisor: one SIGTERM per child, and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

# run_together in a session of its own, as `manage.py serve` runs from a terminal.
SUPERVISE = (
    "import json, sys; from aiserver.supervisor import run_together; "
    "sys.exit(run_together(*json.loads(sys.argv[1]), grace=float(sys.argv[2])))"
)

# Ignores SIGTERM and starts a grandchild that writes its pid, then sleeps: the worst child.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""

# Records the signals it receives; on SIGTERM writes them out and exits.
COUNTING = """
import signal, sys, time
seen = []
def record(signum, frame):
    seen.append(signal.Signals(signum).name)
    if signum == signal.SIGTERM:
        time.sleep(0.3)  # a signal arriving just after still gets recorded
        open(sys.argv[1], "w").write(",".join(seen))
        sys.exit(0)
signal.signal(signal.SIGINT, record)
signal.signal(signal.SIGTERM, record)
open(sys.argv[1], "w").write("ready")
time.sleep(600)
"""


@pytest.fixture
def supervise() -> Iterator:
    """Start run_together over some commands; whatever it leaves behind is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*commands: list[str], grace: float = 15) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", SUPERVISE, json.dumps(commands), str(grace)],
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
        process.wait()


def python(script: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-c", script, *map(str, args)]


def wait_for(path: Path, text: str | None = None, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if content and (text is None or content == text):
            return content
        time.sleep(0.05)
    raise AssertionError(f"{path} never got {text or 'written'}")


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_reaches_each_child_once_as_sigterm(supervise, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    supervisor = supervise(python(COUNTING, seen))
    wait_for(seen, "ready")

    os.killpg(supervisor.pid, signal.SIGINT)  # what a terminal does on Ctrl-C

    assert supervisor.wait(timeout=20) == 0
    assert seen.read_text() == "SIGTERM"


def test_a_child_that_ignores_sigterm_is_killed_with_its_own_children(supervise, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    supervisor = supervise(python(STUBBORN, pid_file), grace=1)
    grandchild = int(wait_for(pid_file))

    os.killpg(supervisor.pid, signal.SIGINT)

    assert supervisor.wait(timeout=20) == 0
    time.sleep(0.2)
    assert not running(grandchild)


def test_children_are_stopped_when_the_supervisor_is_killed(supervise, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    supervisor = supervise(python(COUNTING, seen))
    wait_for(seen, "ready")

    supervisor.kill()

    assert wait_for(seen, "SIGTERM")


def test_when_one_process_exits_the_others_are_stopped_and_serve_fails(supervise, tmp_path: Path) -> None:
    seen = tmp_path / "seen"

    supervisor = supervise(python(COUNTING, seen), python("import time; time.sleep(1)"))

    assert supervisor.wait(timeout=20) == 1
    assert seen.read_text() == "SIGTERM"


def test_serve_refuses_a_port_another_server_listens_on() -> None:
    import socket

    from django.core.management.base import CommandError

    from aiserver.management.commands.serve import listen

    with socket.socket() as other:  # another `make run`: its sockets allow sharing the port
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(CommandError, match="Cannot listen"):
            listen("127.0.0.1", port, 2)


def test_serve_gives_each_web_process_its_socket_on_one_port() -> None:
    from aiserver.management.commands.serve import listen

    sockets = listen("127.0.0.1", _free_port(), 2)
    try:
        assert len(sockets) == 2
        assert len({s.getsockname()[1] for s in sockets}) == 1
    finally:
        for s in {id(s): s for s in sockets}.values():
            s.close()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_trusts_a_proxys_forwarded_headers_only_when_told(settings) -> None:
    from aiserver.management.commands.serve import web_command

    settings.PROXY_HEADERS = False
    assert "--proxy-headers" not in web_command(3)
    settings.PROXY_HEADERS = True
    command = web_command(3)
    assert command[command.index("--proxy-headers") + 1] == "aiserver.asgi:application"

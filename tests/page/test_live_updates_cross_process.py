"""A worker process's group_send reaches a browser's WebSocket in the web process.

Runs for real in whichever configuration the test run is in: daphne serves
tests/live_probe_asgi.py in one subprocess, a publisher runs in another, and
both read the same settings (the SQLite layer on a file under tmp_path in the
embedded run, channels_redis in the scale-out run).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect

BASE_DIR = Path(settings.BASE_DIR)
START_TIMEOUT = 30.0
RECEIVE_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 60.0

PUBLISHER = """
import sys
import django
django.setup()
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
group, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
group_send = async_to_sync(get_channel_layer().group_send)
for n in range(count):
    group_send(group, {"type": "probe.message", "text": f"{tag}:{n}"})
"""


@pytest.fixture
def live_env(tmp_path: Path) -> dict[str, str]:
    """The environment both subprocesses share, so they share one channel store."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="aiserver.settings", PYTHONUNBUFFERED="1")
    if not settings.REDIS_URL:
        env["CHANNELS_DB"] = str(tmp_path / "channels.sqlite3")
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"daphne exited with {server.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"daphne did not listen on {port} within {START_TIMEOUT}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def probe_url(live_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Serve the probe app with daphne and give the WebSocket URL of a fresh group."""
    port = free_port()
    log = tmp_path / "daphne.log"
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*command, "tests.live_probe_asgi:application"],
            cwd=BASE_DIR,
            env=live_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(port, server, log)
        # A group of its own, so that runs sharing one Redis never cross.
        yield f"ws://127.0.0.1:{port}/ws/probe/probe-{uuid.uuid4().hex}/"
    finally:
        stop(server)


async def publish(env: dict[str, str], group: str, tag: str, count: int) -> None:
    """Run group_send in a separate Python process, as a django-q2 worker would."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PUBLISHER,
        group,
        tag,
        str(count),
        cwd=BASE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(worker.communicate(), PUBLISH_TIMEOUT)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert worker.returncode == 0, output.decode()


async def receive_texts(socket_: ClientConnection, count: int) -> list[str]:
    return [str(await asyncio.wait_for(socket_.recv(), RECEIVE_TIMEOUT)) for _ in range(count)]


def group_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


async def test_a_message_from_a_worker_process_reaches_the_browser_socket(
    probe_url: str, live_env: dict[str, str]
) -> None:
    async with connect(probe_url, open_timeout=RECEIVE_TIMEOUT) as browser:
        await publish(live_env, group_of(probe_url), "job", 1)
        assert await receive_texts(browser, 1) == ["job:0"]
    if "CHANNELS_DB" in live_env:
        assert Path(live_env["CHANNELS_DB"]).exists(), "the subprocesses did not share the file"


async def test_a_burst_from_two_workers_arrives_complete_and_in_order(probe_url: str, live_env: dict[str, str]) -> None:
    group = group_of(probe_url)
    async with connect(probe_url, open_timeout=RECEIVE_TIMEOUT) as browser:
        await asyncio.gather(publish(live_env, group, "a", 40), publish(live_env, group, "b", 40))
        texts = await receive_texts(browser, 80)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(browser.recv(), 0.5)  # and nothing twice
    assert [t for t in texts if t.startswith("a:")] == [f"a:{n}" for n in range(40)]
    assert [t for t in texts if t.startswith("b:")] == [f"b:{n}" for n in range(40)]

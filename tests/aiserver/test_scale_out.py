"""Scale-out for real: two web processes and two workers on one PostgreSQL and one Redis.

Jobs go in through one web process; a browser's WebSocket on the other sees every card
change; the two worker processes share the jobs. Runs in the scale-out pass of `make test`.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from websockets.asyncio.client import connect

from tests.fakes.ollama import FakeOllama
from tests.live_server import free_port, scratch_database

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs PostgreSQL and Redis (the scale-out pass)"),
]
BASE_DIR = Path(settings.BASE_DIR)
JOBS = 8
PASSWORD = "scale-out-admin"
CARD = re.compile(r'<article id="job-(\d+)" class="[^"]*" data-state="(\w+)"')
OUTCOME = re.compile(r"Job (\d+) Completed: .* pid (\d+)")


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@contextmanager
def process(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        running = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield running
    finally:
        running.terminate()
        try:
            running.wait(timeout=20)
        except subprocess.TimeoutExpired:
            running.kill()
            running.wait()


def wait_for_web(url: str) -> None:
    for _ in range(150):
        try:
            httpx.get(url + "/accounts/login/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


def session_cookie(url: str) -> str:
    with httpx.Client(base_url=url) as browser:
        browser.get("/accounts/login/")
        form = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        browser.post("/accounts/login/", data=form, headers={"Referer": url + "/accounts/login/"})
        return browser.cookies["sessionid"]


async def watch_and_submit(watch_url: str, submit_url: str, cookie: str, key: str) -> dict[int, list[str]]:
    """Submit JOBS queued jobs through one web process; collect each card state the other one sends."""
    states: dict[int, list[str]] = defaultdict(list)
    ws_url = watch_url.replace("http", "ws") + "/ws/jobs/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": watch_url}
    async with connect(ws_url, additional_headers=headers) as socket:
        async with httpx.AsyncClient(base_url=submit_url, headers={"Authorization": f"Bearer {key}"}) as api:
            for n in range(JOBS):
                files = {"image": ("red.png", red_png(), "image/png")}
                reply = await api.post("/api/QueueImageToText", data={"Model": "llava:7b", "Tag": f"n{n}"}, files=files)
                assert reply.status_code == 200, reply.text
        while sum("Completed" in seen for seen in states.values()) < JOBS:
            message = str(await asyncio.wait_for(socket.recv(), 60))
            for job_id, state in CARD.findall(message):
                states[int(job_id)].append(state)
    return states


def red_png() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    return buffer.getvalue()


def test_two_web_and_two_worker_processes_share_the_jobs_and_every_update(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fake = stack.enter_context(FakeOllama(chunk_delay=0.05))
        database_url = stack.enter_context(scratch_database())
        env = dict(
            os.environ,
            DATABASE_URL=database_url,
            DATA_DIR=str(tmp_path),
            SECRET_KEY="scale-out-test-key",
            WORKERS="1",
            LOCAL_AGENT="0",
            API_RATE_LIMIT_PER_MINUTE="0",
            PYTHONUNBUFFERED="1",
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        manage(env, "migrate", "--verbosity", "0")
        manage(env, "agent", "add", "ollama", fake.url, "--concurrency", "4")
        manage(
            env,
            "shell",
            "-c",
            f"from django.contrib.auth.models import User; User.objects.create_superuser('admin', '', '{PASSWORD}')",
        )
        key = manage(env, "createapikey", "scale-out", "--owner", "admin", "--verbosity", "0")
        webs = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
        for n, url in enumerate(webs):
            daphne = [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                url.rsplit(":", 1)[1],
                "aiserver.asgi:application",
            ]
            stack.enter_context(process(daphne, env, tmp_path / f"web-{n}.log"))
        worker_logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
        workers = [
            stack.enter_context(process([sys.executable, "manage.py", "qcluster"], env, log)) for log in worker_logs
        ]
        for url in webs:
            wait_for_web(url)

        states = asyncio.run(watch_and_submit(webs[1], webs[0], session_cookie(webs[1]), key))
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)

    assert len(states) == JOBS
    for job_id, seen in states.items():
        # A card shows the job as it is when the update is read: a worker may have started it already.
        assert seen[0] in {"Queued", "Started"} and "Started" in seen and seen[-1] == "Completed", (job_id, seen)
    ran_by = {log.name: {int(job) for job, _ in OUTCOME.findall(log.read_text())} for log in worker_logs}
    assert set().union(*ran_by.values()) == set(states), ran_by
    assert all(ran_by.values()), f"every worker should have run jobs: {ran_by}"

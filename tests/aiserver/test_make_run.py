"""What `make run` promises, run for real: `manage.py serve` in a fresh data folder."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import live_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, fake_ollama) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with live_server(tmp_path, OLLAMA_URLS=fake_ollama.url, ADMIN_PASSWORD="s3cret-pass") as running:
        yield running.url, running.process


def test_serve_answers_redirects_the_root_and_lists_vision_models(server) -> None:
    url, _ = server

    root = httpx.get(url + "/")
    admin = httpx.get(url + "/admin/")
    models = httpx.get(url + "/api/ActiveAiModels?Vision=true").json()["results"]

    assert root.status_code == 302 and root.headers["location"] == "/ImageToText"
    assert admin.status_code == 302 and "/admin/login/" in admin.headers["location"]
    assert "llava:7b" in models and "gemma3:4b" in models
    assert "llama3.2:3b" not in models
    assert httpx.get(url + "/static/admin/css/base.css").status_code == 200


def test_serve_creates_the_admin_account_with_the_given_password(server) -> None:
    url, _ = server
    with httpx.Client(base_url=url) as browser:
        login = browser.get("/admin/login/")
        token = browser.cookies["csrftoken"]
        response = browser.post(
            "/admin/login/?next=/admin/",
            data={"username": "admin", "password": "s3cret-pass", "csrfmiddlewaretoken": token},
            headers={"Referer": url + "/admin/login/"},
        )
    assert login.status_code == 200
    assert response.status_code == 302 and response.headers["location"] == "/admin/"


def test_ctrl_c_stops_the_server_and_the_worker(server) -> None:
    url, process = server
    os.killpg(process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    process.wait(timeout=30)

    assert processes_left_in_session(process.pid) == []
    assert "Serving on" in (process.stdout.read() if process.stdout else "")
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/admin/login/", timeout=2)


def test_ctrl_c_followed_at_once_by_sigterm_still_stops_everything(server) -> None:
    # Ctrl-C and then a supervisor's SIGTERM: the worker must not get both (django-q2 deadlocks).
    _, process = server
    os.killpg(process.pid, signal.SIGINT)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)

    assert processes_left_in_session(process.pid) == []
    assert process.returncode == 0


def processes_left_in_session(session: int, seconds: float = 20) -> list[str]:
    """What is still running in the session after a few seconds' grace."""
    deadline = time.monotonic() + seconds
    while True:
        left = subprocess.run(["pgrep", "-a", "-s", str(session)], capture_output=True, text=True).stdout.splitlines()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_serve_runs_two_web_processes_on_its_one_port(server) -> None:
    url, process = server
    webs = [line for line in processes_left_in_session(process.pid, seconds=0) if "daphne" in line]

    answers = {httpx.get(url + "/accounts/login/").status_code for _ in range(20)}

    assert len(webs) == 2, webs
    assert all("--fd" in line for line in webs), webs
    assert answers == {200}

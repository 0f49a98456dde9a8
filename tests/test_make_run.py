"""What `make run` promises, run for real: `manage.py serve` in a fresh data folder.

In the scale-out pass the server gets its own throwaway PostgreSQL database.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def database_url() -> Iterator[str]:
    """Empty for SQLite; in the scale-out pass a fresh PostgreSQL database, dropped afterwards."""
    base = os.environ.get("DATABASE_URL", "")
    if not base:
        yield ""
        return
    import psycopg

    name = f"serve_test_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def server(tmp_path: Path, fake_ollama, database_url: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:  # type: ignore[no-untyped-def]
    port = free_port()
    env = dict(os.environ, DATA_DIR=str(tmp_path), PORT=str(port), OLLAMA_URLS=fake_ollama.url, ADMIN_PASSWORD="s3cret-pass")
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
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_until_serving(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{process.stdout.read() if process.stdout else ''}")
        try:
            httpx.get(url + "/admin/login/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("serve did not answer within a minute")


def test_serve_answers_redirects_the_root_and_lists_vision_models(server) -> None:  # type: ignore[no-untyped-def]
    url, _ = server

    root = httpx.get(url + "/")
    admin = httpx.get(url + "/admin/")
    models = httpx.get(url + "/api/ActiveAiModels?Vision=true").json()["results"]

    assert root.status_code == 302 and root.headers["location"] == "/ImageToText"
    assert admin.status_code == 302 and "/admin/login/" in admin.headers["location"]
    assert "llava:7b" in models and "gemma3:4b" in models
    assert "llama3.2:3b" not in models
    assert httpx.get(url + "/static/admin/css/base.css").status_code == 200


def test_serve_creates_the_admin_account_with_the_given_password(server) -> None:  # type: ignore[no-untyped-def]
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


def test_ctrl_c_stops_the_server_and_the_worker(server) -> None:  # type: ignore[no-untyped-def]
    url, process = server
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=30)
    output = process.stdout.read() if process.stdout else ""
    assert "Serving on" in output
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/admin/login/", timeout=2)
    leftovers = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert leftovers == []

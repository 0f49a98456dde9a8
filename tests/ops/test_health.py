"""/healthz and /readyz: the process answers; the database, broker, channel layer and workers are there."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from datetime import timedelta

import httpx
import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from django.utils import timezone

from aiserver import health
from imagetotext import leases
from imagetotext.models import WorkerHeartbeat
from tests.live_server import live_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("only_the_beats_made_here")]


@pytest.fixture
def only_the_beats_made_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """An earlier test may have left this process beating as a worker (leases.holder's thread):
    its row would count as a second live worker. Stop it writing one, then clear what it wrote."""
    monkeypatch.setattr(leases.holder, "worker", None)
    WorkerHeartbeat.objects.all().delete()


def beat(seconds_ago: float = 0, name: str = "worker-host:4242") -> WorkerHeartbeat:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    return WorkerHeartbeat.objects.create(name=name, beat_at=at, started_at=at - timedelta(minutes=1))


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new cursor fails the way an unreachable server does, with its address in the message."""

    def refuse(self: BaseDatabaseWrapper) -> None:
        raise OperationalError('connection to server at "db.internal" (10.0.0.5), port 5432 failed')

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", refuse)


def test_healthz_answers_ok(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_healthz_answers_while_the_database_is_down(client: Client, database_down: None) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_refuses_a_post(client: Client) -> None:
    assert client.post("/healthz").status_code == 405


def test_readyz_is_ready_with_a_recent_worker_beat(client: Client, ollama_agent) -> None:
    beat(seconds_ago=2)

    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    checks = body["checks"]
    assert [checks[name]["state"] for name in ("database", "broker", "channel_layer", "workers")] == ["ok"] * 4
    assert checks["workers"]["alive"] == 1
    assert checks["agents"] == {"online": 1}


def test_readyz_counts_only_workers_that_beat_lately(client: Client) -> None:
    beat(seconds_ago=1, name="a:1")
    beat(seconds_ago=3, name="a:2")
    beat(seconds_ago=600, name="a:3")

    assert client.get("/readyz").json()["checks"]["workers"] == {"state": "ok", "alive": 2}


def test_readyz_is_not_ready_when_no_worker_beat_recently(client: Client) -> None:
    beat(seconds_ago=600)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["workers"] == {"state": "failing", "alive": 0}
    assert body["checks"]["database"] == {"state": "ok"}


def test_readyz_is_not_ready_when_the_database_is_unreachable(client: Client, database_down: None) -> None:
    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"state": "failing", "error": "OperationalError"}
    assert checks["workers"] == {"state": "unknown"}
    assert checks["channel_layer"] == {"state": "ok"}


def test_readyz_does_not_show_what_the_error_said(client: Client, database_down: None) -> None:
    text = client.get("/readyz").content.decode()

    assert "db.internal" not in text and "10.0.0.5" not in text and "5432" not in text


def test_readyz_says_nothing_about_agents_but_how_many_are_online(client: Client, ollama_agent, fake_ollama) -> None:
    beat()

    text = client.get("/readyz").content.decode()

    assert fake_ollama.url.split("//")[1] not in text
    assert ollama_agent.name not in text and ollama_agent.version not in text


def test_readyz_gives_up_on_a_check_that_hangs(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    beat()

    async def hang() -> None:
        await asyncio.sleep(5)

    monkeypatch.setattr(health, "CHECK_SECONDS", 0.2)
    monkeypatch.setattr(health, "channel_layer_check", hang)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"] == {"state": "timeout"}
    assert response.json()["checks"]["database"] == {"state": "ok"}


def test_readyz_is_not_ready_when_the_broker_fails(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    beat()

    def refuse() -> None:
        raise ConnectionError("Error 111 connecting to redis.internal:6379")

    monkeypatch.setattr(health, "broker_answers", refuse)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {"state": "failing", "error": "ConnectionError"}
    assert "redis.internal" not in response.content.decode()


def test_a_worker_writes_its_heartbeat_as_host_and_pid() -> None:
    worker = leases.Worker()

    worker.record()

    row = WorkerHeartbeat.objects.get()
    assert row.name == f"{socket.gethostname()}:{os.getpid()}"
    assert timezone.now() - row.beat_at < timedelta(seconds=5)


def test_a_later_beat_moves_the_same_row_on() -> None:
    worker = leases.Worker()
    worker.record()
    WorkerHeartbeat.objects.update(beat_at=timezone.now() - timedelta(seconds=30))

    worker.record()

    row = WorkerHeartbeat.objects.get()
    assert timezone.now() - row.beat_at < timedelta(seconds=5)
    assert row.started_at == worker.started_at


def test_a_worker_beats_at_most_every_few_seconds() -> None:
    worker = leases.Worker()
    assert worker.due()

    worker.record()

    assert not worker.due()


def test_a_beat_removes_the_rows_of_workers_gone_for_minutes() -> None:
    beat(seconds_ago=leases.WORKER_STALE_SECONDS + 60, name="gone:1")
    beat(seconds_ago=60, name="quiet:2")

    leases.Worker().record()

    assert sorted(WorkerHeartbeat.objects.values_list("name", flat=True)) == sorted(
        ["quiet:2", f"{socket.gethostname()}:{os.getpid()}"]
    )


@pytest.mark.slow
def test_the_running_server_is_ready_once_its_worker_beats(tmp_path, fake_ollama) -> None:
    with live_server(tmp_path, OLLAMA_URLS=fake_ollama.url, LOCAL_AGENT="0") as server:
        body = wait_for_ready(server.url)

        assert body["status"] == "ready"
        assert body["checks"]["workers"]["alive"] >= 1
        assert body["checks"]["agents"] == {"online": 1}
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}


def wait_for_ready(url: str, seconds: float = 60) -> dict:
    """/readyz until it says ready (the worker's first beat comes as it starts)."""
    deadline = timezone.now() + timedelta(seconds=seconds)
    while True:
        response = httpx.get(url + "/readyz", timeout=10)
        if response.status_code == 200 or timezone.now() > deadline:
            return json.loads(response.text)
        time.sleep(0.5)

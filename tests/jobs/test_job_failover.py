"""A failing agent is marked offline and the job moves to the next one, a bounded number of times."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.health import check_agent
from agents.models import Agent
from imagetotext.models import Job, State
from tests.fakes.ollama import FakeOllama

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


@pytest.fixture
def second_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    fake.start()
    yield fake
    fake.stop()


def add_agent(name: str, url: str, priority: int) -> Agent:
    agent = Agent.objects.create(name=name, kind="ollama", base_url=url, priority=priority)
    assert check_agent(agent)
    return agent


def post(client: Client, png: bytes, model: str = "llava:7b"):
    return client.post("/api/ImageToText", {"image": SimpleUploadedFile("a.png", png), "Model": model})


def test_a_refused_connection_fails_over_to_the_next_agent(api_client, fake_ollama, second_ollama, png_bytes) -> None:
    first = add_agent("first", fake_ollama.url, priority=5)
    second = add_agent("second", second_ollama.url, priority=1)
    fake_ollama.mode = "refuse"

    response = post(api_client, png_bytes)

    assert response.status_code == 200
    assert response.json()["results"][0]["text"] == second_ollama.reply_for("llava:7b", "Describe this image.")
    job = Job.objects.get()
    assert (job.state, job.agent, job.attempts, job.tried_agents) == (State.COMPLETED, second, 2, [first.pk])
    first.refresh_from_db()
    assert first.online is False and "connection refused" in first.last_error


def test_a_server_error_mid_stream_also_fails_over(api_client, fake_ollama, second_ollama, png_bytes) -> None:
    add_agent("first", fake_ollama.url, priority=5)
    second = add_agent("second", second_ollama.url, priority=1)
    fake_ollama.mode = "midstream_error"

    assert post(api_client, png_bytes).status_code == 200
    assert Job.objects.get().agent == second


def test_when_every_agent_fails_the_job_fails_with_the_last_reason(
    api_client, fake_ollama, second_ollama, png_bytes
) -> None:
    add_agent("first", fake_ollama.url, priority=5)
    add_agent("second", second_ollama.url, priority=1)
    fake_ollama.mode = second_ollama.mode = "500"

    response = post(api_client, png_bytes)

    assert response.status_code == 500
    job = Job.objects.get()
    assert job.state == State.FAILED and job.attempts == 2
    assert job.error.startswith("second:") and "answered 500" in job.error
    assert Agent.objects.filter(online=True).count() == 0


def test_attempts_are_bounded(api_client, fake_ollama, second_ollama, png_bytes, monkeypatch) -> None:
    from imagetotext.conf import Conf

    monkeypatch.setattr(Conf, "MAX_ATTEMPTS", 1)
    add_agent("first", fake_ollama.url, priority=5)
    add_agent("second", second_ollama.url, priority=1)
    fake_ollama.mode = "refuse"

    response = post(api_client, png_bytes)

    assert response.status_code == 500
    assert Job.objects.get().attempts == 1
    assert not [r for r in second_ollama.requests if r.path == "/api/generate"]


def test_a_permanent_error_does_not_fail_over(api_client, fake_ollama, second_ollama, png_bytes) -> None:
    first = add_agent("first", fake_ollama.url, priority=5)
    add_agent("second", second_ollama.url, priority=1)
    fake_ollama.mode = "no_vision"

    post(api_client, png_bytes)

    job = Job.objects.get()
    assert job.state == State.FAILED and job.attempts == 1
    assert not [r for r in second_ollama.requests if r.path == "/api/generate"]
    first.refresh_from_db()
    assert first.online is True

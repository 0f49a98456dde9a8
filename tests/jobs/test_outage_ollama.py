"""Ollama outages through the real engine: a refused connection, a hang, a 500, a stream that breaks.

With one agent the job fails with a clear reason in bounded time and the agent's slot is free for
the next job; with two agents for the model the job moves to the healthy one and completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.health import check_agent
from agents.models import Agent
from imagetotext.conf import Conf
from imagetotext.models import Job, State
from tests.fakes.ollama import FakeOllama

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]

PROMPT = "Describe this image."
MODEL = {"Model": "llava:7b"}
# Short timeouts keep the hang and the stall to a couple of seconds.
TIMEOUTS = {"connect_timeout": 1, "first_byte_timeout": 2, "idle_timeout": 1}
# The longest a failing attempt may take: the first-byte timeout and a margin for a loaded machine.
BOUND = 6.0

OUTAGES = {
    "refuse": "Cannot connect to {url}/api/generate: connection refused",
    "hang": "llava:7b sent nothing for 2 s after the request (first-byte timeout)",
    "500": "Ollama answered 500: llama runner process has terminated: exit status 2",
    "drop": "The connection to {url}/api/generate broke before the answer was complete",
    "truncate": "The answer stopped before the model finished (no done:true line)",
    "stall": "llava:7b went silent for 1 s mid-answer (idle timeout)",
}


@pytest.fixture(autouse=True)
def short_sync_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A slot left held would make the next request wait this long, then answer "still running".
    monkeypatch.setattr(Conf, "SYNC_WAIT_SECONDS", 15.0)


@pytest.fixture
def healthy_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def add_agent(name: str, fake: FakeOllama, priority: int = 0) -> Agent:
    agent = Agent.objects.create(name=name, kind="ollama", base_url=fake.url, priority=priority, **TIMEOUTS)
    assert check_agent(agent), agent.last_error
    return agent


def post(client: Client, png: bytes) -> tuple[dict, int, float]:
    started = time.monotonic()
    response = client.post("/api/ImageToText", {"image": SimpleUploadedFile("a.png", png)} | MODEL)
    return response.json(), response.status_code, time.monotonic() - started


def nothing_started() -> bool:
    return not Job.objects.filter(state__in=[State.STARTED, State.QUEUED]).exists()


@pytest.mark.parametrize("outage", OUTAGES)
def test_with_one_agent_the_job_fails_with_the_reason_in_bounded_time_and_frees_the_slot(
    api_client: Client, fake_ollama: FakeOllama, png_bytes: bytes, outage: str
) -> None:
    gpu = add_agent("gpu", fake_ollama)
    fake_ollama.mode = outage

    body, status, seconds = post(api_client, png_bytes)

    assert status == 500
    reason = OUTAGES[outage].format(url=fake_ollama.url)
    assert body["responseStatus"]["message"].startswith(f"gpu: {reason}")
    assert seconds < BOUND
    job = Job.objects.get()
    assert (job.state, job.output) == (State.FAILED, "")  # no partial text passed off as the answer
    assert nothing_started()
    gpu.refresh_from_db()
    assert gpu.online is False and gpu.last_error.startswith(reason)

    fake_ollama.mode = "ok"
    assert check_agent(gpu)
    body, status, _ = post(api_client, png_bytes)  # concurrency 1: only runs if the failed job let go
    assert status == 200, body
    assert body["results"][0]["text"] == fake_ollama.reply_for("llava:7b", PROMPT)
    assert nothing_started()


@pytest.mark.parametrize("outage", OUTAGES)
def test_with_two_agents_the_job_fails_over_to_the_healthy_one_and_completes(
    api_client: Client, fake_ollama: FakeOllama, healthy_ollama: FakeOllama, png_bytes: bytes, outage: str
) -> None:
    broken = add_agent("broken", fake_ollama, priority=5)  # tried first
    healthy = add_agent("healthy", healthy_ollama, priority=1)
    fake_ollama.mode = outage

    body, status, seconds = post(api_client, png_bytes)

    assert status == 200, body
    assert body["results"][0]["text"] == healthy_ollama.reply_for("llava:7b", PROMPT)
    assert seconds < BOUND
    job = Job.objects.get()
    assert (job.state, job.agent, job.attempts, job.tried_agents) == (State.COMPLETED, healthy, 2, [broken.pk])
    assert nothing_started()
    broken.refresh_from_db()
    assert broken.last_error.startswith(OUTAGES[outage].format(url=fake_ollama.url))


def test_a_queued_job_on_a_hung_agent_is_reported_failed_in_bounded_time(
    api_client: Client, fake_ollama: FakeOllama, png_bytes: bytes
) -> None:
    add_agent("gpu", fake_ollama)
    fake_ollama.mode = "hang"
    started = time.monotonic()

    queued = api_client.post("/api/QueueImageToText", {"image": SimpleUploadedFile("a.png", png_bytes)} | MODEL)
    status = api_client.get(f"/api/GetTextGenerationStatus?JobId={queued.json()['jobId']}").json()

    assert time.monotonic() - started < BOUND
    assert status["jobState"] == "Failed"
    assert status["responseStatus"]["message"] == f"gpu: {OUTAGES['hang']}"
    assert nothing_started()

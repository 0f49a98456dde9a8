"""ComfyUI outages through the real engine: refused, hung, 500, and a server lost in the middle of a run.

With one agent the job fails with a clear reason in bounded time and the agent's slot is free for
the next job; with two agents for the model the job moves to the healthy one and completes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from agents.health import check_agent
from agents.models import Agent
from imagetotext.conf import Conf
from imagetotext.models import Job, State
from tests.fakes.comfyui import FakeComfyUI

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]

MODEL = "microsoft/Florence-2-base"
TIMEOUTS = {"connect_timeout": 1, "first_byte_timeout": 2, "idle_timeout": 1}
BOUND = 6.0


def silent(fake: FakeComfyUI) -> None:
    fake.mode = "hang"  # nothing more arrives, pings go unanswered


def stopped(fake: FakeComfyUI) -> None:
    fake.mode = "refuse"


def dropped(fake: FakeComfyUI) -> None:
    fake.mode = "drop"  # the socket dies after its next message, and so does every request


# name: (mode from the start, or what happens once the prompt runs; the reason the job fails with)
OUTAGES: dict[str, tuple[str | Callable[[FakeComfyUI], None], str]] = {
    "refuse": ("refuse", "Cannot connect to {url}/upload/image: connection refused"),
    "hang": ("hang", "No answer from {url}/upload/image within 2 s"),
    "500": ("500", "POST /upload/image answered 500"),
    "silent mid-run": (silent, "ComfyUI went silent for 1 s: no message and no answer to a ping (idle timeout)"),
    "stopped mid-run": (stopped, "Cannot connect to {url}/history/"),
    "dropped mid-run": (dropped, "Cannot connect to {url}/history/"),
    "restarted mid-run": (FakeComfyUI.restart, "ComfyUI lost the prompt"),
}


@pytest.fixture(autouse=True)
def short_sync_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "SYNC_WAIT_SECONDS", 15.0)


@pytest.fixture
def healthy_comfyui() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as fake:
        yield fake


def add_agent(name: str, fake: FakeComfyUI, priority: int = 0) -> Agent:
    agent = Agent.objects.create(name=name, kind="comfyui", base_url=fake.url, priority=priority, **TIMEOUTS)
    assert check_agent(agent), agent.last_error
    return agent


def break_it(fake: FakeComfyUI, outage: str) -> threading.Thread | None:
    """Put the fake in the outage: at once, or from a thread as soon as it runs the prompt."""
    how, _ = OUTAGES[outage]
    if isinstance(how, str):
        fake.mode = how
        return None
    fake.run_seconds = 20

    def when_running() -> None:
        deadline = time.monotonic() + 10
        while fake.running_prompt is None and time.monotonic() < deadline:
            time.sleep(0.02)
        how(fake)

    watcher = threading.Thread(target=when_running, daemon=True)
    watcher.start()
    return watcher


def heal(fake: FakeComfyUI, watcher: threading.Thread | None) -> None:
    """Back to a healthy state: answering again, and the prompt the job gave up on stopped (ComfyUI's Cancel)."""
    if watcher is not None:
        watcher.join(5)
    fake.mode, fake.run_seconds = "ok", 0.1
    httpx.post(fake.url + "/interrupt", json={})
    deadline = time.monotonic() + 5
    while fake.running_prompt is not None and time.monotonic() < deadline:
        time.sleep(0.02)


def reason(outage: str, fake: FakeComfyUI) -> str:
    return OUTAGES[outage][1].format(url=fake.url)


def post(client: Client, png: bytes) -> tuple[dict, int, float]:
    started = time.monotonic()
    response = client.post("/api/ImageToText", {"image": SimpleUploadedFile("a.png", png), "Model": MODEL})
    return response.json(), response.status_code, time.monotonic() - started


def nothing_started() -> bool:
    return not Job.objects.filter(state__in=[State.STARTED, State.QUEUED]).exists()


@pytest.mark.parametrize("outage", OUTAGES)
def test_with_one_agent_the_job_fails_with_the_reason_in_bounded_time_and_frees_the_slot(
    api_client: Client, fake_comfyui: FakeComfyUI, png_bytes: bytes, outage: str
) -> None:
    comfy = add_agent("comfy", fake_comfyui)
    watcher = break_it(fake_comfyui, outage)

    body, status, seconds = post(api_client, png_bytes)

    assert status == 500
    assert body["responseStatus"]["message"].startswith(f"comfy: {reason(outage, fake_comfyui)}")
    assert seconds < BOUND
    assert Job.objects.get().state == State.FAILED
    assert nothing_started()

    heal(fake_comfyui, watcher)
    assert check_agent(comfy)
    body, status, _ = post(api_client, png_bytes)  # concurrency 1: only runs if the failed job let go
    assert status == 200, body
    assert body["results"][0]["text"] == fake_comfyui.caption_for("more_detailed_caption")
    assert nothing_started()


@pytest.mark.parametrize("outage", OUTAGES)
def test_with_two_agents_the_job_fails_over_to_the_healthy_one_and_completes(
    api_client: Client, fake_comfyui: FakeComfyUI, healthy_comfyui: FakeComfyUI, png_bytes: bytes, outage: str
) -> None:
    broken = add_agent("broken", fake_comfyui, priority=5)
    healthy = add_agent("healthy", healthy_comfyui, priority=1)
    break_it(fake_comfyui, outage)

    body, status, seconds = post(api_client, png_bytes)

    assert status == 200, body
    assert body["results"][0]["text"] == healthy_comfyui.caption_for("more_detailed_caption")
    assert seconds < BOUND
    job = Job.objects.get()
    assert (job.state, job.agent, job.attempts, job.tried_agents) == (State.COMPLETED, healthy, 2, [broken.pk])
    assert nothing_started()
    broken.refresh_from_db()
    assert broken.online is False and broken.last_error.startswith(reason(outage, fake_comfyui))

"""A job keeps at most Conf.MAX_OUTPUT_CHARS of an answer, says so, and stops the backend there."""

from __future__ import annotations

import time

import pytest

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.conf import Conf
from imagetotext.dispatch import dispatch
from imagetotext.models import Job, State
from imagetotext.tasks import run_assigned
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.django_db(transaction=True)

CAP = 2000


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "MAX_OUTPUT_CHARS", CAP)
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)


def run_one(owner, image, fake: FakeOllama) -> tuple[Job, float]:
    agent = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url=fake.url)
    agent.mark_online(Discovery("1", [DiscoveredModel("llava:7b", Capability.VISION)]))
    job = Job.objects.create(owner=owner, model="llava:7b", prompt="Describe", image=image)
    dispatch()
    started = time.monotonic()
    run_assigned(job.pk)
    job.refresh_from_db()
    return job, time.monotonic() - started


def test_a_streamed_answer_over_the_cap_is_cut_and_the_backend_stopped(api_user, image) -> None:
    words = [f"word{n} " for n in range(20_000)]  # ~140,000 characters, 20,000 chunks
    with FakeOllama(chunk_delay=0.002) as fake:  # 40 s to stream it all
        fake.replies["llava:7b"] = "".join(words)
        job, took = run_one(api_user, image, fake)

    assert job.state == State.COMPLETED
    assert job.output.startswith("".join(words)[:CAP])
    assert job.output.endswith(f"[The answer was cut here, at {CAP:,} characters.]")
    assert len(job.output) < CAP + 100
    assert "cut" in job.status
    assert took < 10  # it stopped reading at the cap instead of taking the whole answer


def test_a_whole_answer_over_the_cap_is_cut(api_user, image, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama() as fake:
        fake.replies["llava:7b"] = "x" * (CAP * 3)
        job, _ = run_one(api_user, image, fake)

    assert job.state == State.COMPLETED
    assert job.output.startswith("x" * CAP) and not job.output.startswith("x" * (CAP + 1))
    assert "cut" in job.output and "cut" in job.status


def test_an_answer_within_the_cap_is_kept_whole(api_user, image) -> None:
    with FakeOllama() as fake:
        fake.replies["llava:7b"] = "y" * CAP
        job, _ = run_one(api_user, image, fake)

    assert job.output == "y" * CAP and job.status == State.COMPLETED

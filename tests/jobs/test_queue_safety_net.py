"""The minute schedule's safety net: jobs no agent can take (jobs of stopped processes: test_leases.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.conf import Conf
from imagetotext.jobs import retry
from imagetotext.models import Job, State
from imagetotext.tasks import dispatch_periodically

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def handed_to_workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


def agent(name: str, online: bool = True, concurrency: int = 1) -> Agent:
    row = Agent.objects.create(name=name, kind=Kind.OLLAMA, base_url=f"http://{name}:1", concurrency=concurrency)
    row.mark_online(Discovery("1", [DiscoveredModel("llava:7b", Capability.VISION)]))
    if not online:
        row.mark_offline("Connection refused")
    return row


def queued_job(owner, minutes_ago: float, **fields) -> Job:
    since = timezone.now() - timedelta(minutes=minutes_ago)
    return Job.objects.create(
        owner=owner, model="llava:7b", prompt="Describe", created_at=since, queued_at=since, **fields
    )


def test_a_job_waiting_too_long_for_an_offline_model_fails_with_the_reason(api_user, api_client) -> None:
    agent("gpu", online=False)
    job = queued_job(api_user, minutes_ago=Conf.QUEUE_WAIT_SECONDS / 60 + 1)

    dispatch_periodically()

    status = api_client.get(f"/api/GetTextGenerationStatus?JobId={job.pk}")
    job.refresh_from_db()
    assert job.state == State.FAILED
    assert job.error == "No active agent offered llava:7b for 15 minutes; the job was given up."
    assert status.json()["jobState"] == "Failed"


def test_the_reason_gives_the_configured_wait(api_user, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "QUEUE_WAIT_SECONDS", 90)
    agent("gpu", online=False)
    job = queued_job(api_user, minutes_ago=2)

    dispatch_periodically()

    job.refresh_from_db()
    assert job.error == "No active agent offered llava:7b for 1.5 minutes; the job was given up."


def test_a_job_waiting_for_an_offline_model_keeps_waiting_within_the_limit(api_user) -> None:
    agent("gpu", online=False)
    job = queued_job(api_user, minutes_ago=Conf.QUEUE_WAIT_SECONDS / 60 - 1)

    dispatch_periodically()

    job.refresh_from_db()
    assert job.state == State.QUEUED and job.error == ""


def test_a_job_behind_a_busy_online_agent_waits_as_long_as_it_takes(api_user) -> None:
    gpu = agent("gpu", online=True)
    Job.objects.create(owner=api_user, model="llava:7b", agent=gpu, state=State.STARTED, started_at=timezone.now())
    job = queued_job(api_user, minutes_ago=Conf.QUEUE_WAIT_SECONDS / 60 * 4)

    dispatch_periodically()

    job.refresh_from_db()
    assert job.state == State.QUEUED and job.agent is None


def test_a_retried_old_job_waits_afresh(api_user, handed_to_workers) -> None:
    agent("gpu", online=False)
    old = queued_job(api_user, minutes_ago=600, state=State.FAILED, error="Backend down", finished_at=timezone.now())

    retry(old)
    dispatch_periodically()

    old.refresh_from_db()
    assert old.state == State.QUEUED
    assert timezone.now() - old.queued_at < timedelta(minutes=1)

"""A job submitted while no other job waits is inserted already assigned (dispatch.agent_for_new_job),
with the same choice, and within the same concurrency, as a dispatch of the queue would make."""

from __future__ import annotations

import io
import threading

import pytest
from django.db import connections
from PIL import Image

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext import jobs
from imagetotext.images import read_upload
from imagetotext.models import Job, State
from tests.jobs.test_dispatch import agent, handed_to_workers  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def submit(owner, model: str = "llava:7b", sync: bool = False, shade: int = 0) -> Job:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (shade % 256, shade // 256, 90)).save(buffer, "PNG")
    spec = jobs.validate(jobs.JobRequest(owner=owner, model=model, prompt="Describe"))
    return jobs.create_with_upload(
        spec, read_upload(buffer.getvalue(), 1024 if sync else None), hand_to_workers=not sync
    )


def test_a_synchronous_job_with_the_queue_empty_is_started_on_the_least_busy_agent(api_user, handed_to_workers):
    agent("low", concurrency=2, priority=0)
    high = agent("high", concurrency=2, priority=5)

    first = submit(api_user, sync=True)

    assert first.runs_here and first.agent == high
    stored = Job.objects.get(pk=first.pk)
    assert (stored.state, stored.agent, stored.attempts) == (State.STARTED, high, 1)
    assert stored.started_at is not None and stored.lease_until is not None
    assert stored.status == "Running on high"
    # high now runs one of two: low (none of two) is the less busy.
    assert submit(api_user, sync=True, shade=1).agent.name == "low"
    assert handed_to_workers == []


def test_a_queued_job_with_the_queue_empty_is_assigned_and_handed_to_the_workers(api_user, handed_to_workers):
    only = agent("only")

    job = submit(api_user)

    stored = Job.objects.get(pk=job.pk)
    assert (stored.state, stored.agent, stored.status) == (State.QUEUED, only, "Waiting for a worker on only")
    assert stored.lease_until is not None  # taken up again if no worker ever starts it
    assert handed_to_workers == [job.pk] and not job.runs_here


def test_a_synchronous_job_for_the_built_in_ocr_goes_to_a_worker(api_user, handed_to_workers):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL)
    local.mark_online(Discovery("1", [DiscoveredModel("local/ocr", Capability.OCR)]))

    job = submit(api_user, model="local/ocr", sync=True)

    assert not job.runs_here and Job.objects.get(pk=job.pk).state == State.QUEUED
    assert handed_to_workers == [job.pk]


def test_a_new_job_does_not_pass_jobs_already_waiting(api_user, handed_to_workers):
    busy = agent("busy", model="llava:7b")
    waiting = Job.objects.create(owner=api_user, model="llava:7b", prompt="Describe")  # no agent was free for it
    Job.objects.filter(pk=waiting.pk).update(created_at=waiting.created_at.replace(year=2020))

    new = submit(api_user, sync=True)

    assert Job.objects.get(pk=waiting.pk).agent == busy  # the oldest took the free slot
    assert not new.runs_here and Job.objects.get(pk=new.pk).agent is None
    assert handed_to_workers == [waiting.pk]


def test_a_new_job_waits_when_every_agent_for_its_model_is_busy(api_user, handed_to_workers):
    agent("one")
    running = submit(api_user, sync=True)

    second = submit(api_user, sync=True, shade=1)

    assert running.runs_here and not second.runs_here
    assert Job.objects.get(pk=second.pk).agent is None and handed_to_workers == []


def test_submissions_at_once_never_exceed_an_agents_concurrency(api_user, handed_to_workers):
    agent("one", concurrency=2)
    agent("two", concurrency=1)
    start = threading.Barrier(6)
    made: list[Job] = []

    def client(number: int) -> None:
        try:
            start.wait(5)
            for turn in range(3):
                made.append(submit(api_user, sync=number % 2 == 0, shade=number * 10 + turn))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(made) == 18
    assert Job.objects.filter(agent__name="one").count() == 2
    assert Job.objects.filter(agent__name="two").count() == 1
    assert Job.objects.filter(agent__isnull=True, state=State.QUEUED).count() == 15
    started_here = {job.pk for job in made if job.runs_here}
    assigned = set(Job.objects.filter(agent__isnull=False).values_list("pk", flat=True))
    assert started_here | set(handed_to_workers) == assigned and not started_here & set(handed_to_workers)

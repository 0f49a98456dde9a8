"""Leases: a job holds its agent's slot only while the process running it is alive.

The crash tests with real processes are in tests/jobs/test_crashes.py; these drive the pieces
in one process: expired leases taken up, the heartbeat's renewal, a stale run that cannot end
the job, and a cancelled job that keeps its slot until its backend request has ended.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext import jobs, leases
from imagetotext.conf import Conf
from imagetotext.dispatch import dispatch, work_to_assign
from imagetotext.models import Job, State
from imagetotext.tasks import dispatch_periodically, run_assigned, start
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def handed_to_workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


@pytest.fixture
def callbacks_queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    queued: list[int] = []
    monkeypatch.setattr("imagetotext.jobs.owe", lambda job: queued.append(job.pk))
    return queued


def agent(name: str = "gpu", concurrency: int = 1, base_url: str = "") -> Agent:
    row = Agent.objects.create(
        name=name, kind=Kind.OLLAMA, base_url=base_url or f"http://{name}:1", concurrency=concurrency
    )
    row.mark_online(Discovery("1", [DiscoveredModel("llava:7b", Capability.VISION)]))
    return row


def ago(seconds: float) -> timezone.datetime:
    return timezone.now() - timedelta(seconds=seconds)


def started_job(owner, gpu: Agent, lease_until, attempts: int = 1, **fields) -> Job:
    fields = {"state": State.STARTED, "started_at": ago(5), **fields}
    return Job.objects.create(
        owner=owner,
        model="llava:7b",
        prompt="Describe",
        agent=gpu,
        attempts=attempts,
        lease_until=lease_until,
        **fields,
    )


def until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def waiting_job(owner, **fields) -> Job:
    return Job.objects.create(owner=owner, model="llava:7b", prompt="Describe", **fields)


# --- expired leases are taken up -------------------------------------------------------------


def test_a_started_job_whose_lease_ran_out_is_queued_again_and_handed_out(api_user, handed_to_workers) -> None:
    gpu = agent()
    lost = started_job(api_user, gpu, lease_until=ago(1))

    handed = dispatch_periodically()

    lost.refresh_from_db()
    assert handed == [lost.pk] == handed_to_workers
    assert lost.state == State.QUEUED and lost.agent == gpu  # assigned afresh, to the same free agent
    assert lost.attempts == 1  # the next start counts the second attempt
    assert lost.tried_agents == []  # the agent did nothing wrong: its process died


def test_a_job_whose_process_died_max_attempts_times_fails_and_frees_its_slot(api_user, handed_to_workers) -> None:
    gpu = agent()
    lost = started_job(api_user, gpu, lease_until=ago(1), attempts=Conf.MAX_ATTEMPTS)
    waiting = waiting_job(api_user)

    handed = dispatch_periodically()

    lost.refresh_from_db()
    assert lost.state == State.FAILED and lost.error_code == "WorkerLost"
    assert f"{Conf.MAX_ATTEMPTS} times" in lost.error
    assert lost.lease_until is None
    assert handed == [waiting.pk]


def test_a_job_whose_lease_is_current_is_left_to_its_process(api_user, handed_to_workers) -> None:
    gpu = agent()
    running = started_job(api_user, gpu, lease_until=leases.lease_end())
    waiting_job(api_user)

    assert dispatch_periodically() == []

    running.refresh_from_db()
    assert running.state == State.STARTED and running.agent == gpu


def test_a_job_stuck_past_the_task_timeout_fails(api_user, settings, handed_to_workers) -> None:
    gpu = agent()
    stuck = started_job(api_user, gpu, lease_until=ago(1), started_at=ago(settings.TASK_TIMEOUT + 5))

    dispatch_periodically()

    stuck.refresh_from_db()
    assert stuck.state == State.FAILED and stuck.error_code == "Timeout"


def test_an_assigned_job_never_started_is_assigned_again(api_user, handed_to_workers) -> None:
    gpu = agent()
    stuck = waiting_job(api_user, agent=gpu, lease_until=ago(1))

    dispatch_periodically()

    stuck.refresh_from_db()
    assert stuck.state == State.QUEUED and stuck.agent == gpu
    assert stuck.lease_until is not None and stuck.lease_until > timezone.now()
    assert handed_to_workers == [stuck.pk]


def test_an_ended_job_whose_process_died_before_letting_go_frees_its_slot(api_user, handed_to_workers) -> None:
    gpu = agent()
    ended = started_job(api_user, gpu, lease_until=ago(1), state=State.CANCELLED, finished_at=ago(2))
    waiting = waiting_job(api_user)
    assert not work_to_assign()  # held

    assert dispatch_periodically() == [waiting.pk]

    ended.refresh_from_db()
    assert ended.state == State.CANCELLED and ended.lease_until is None


# --- the heartbeat ------------------------------------------------------------------------------


def test_renewal_pushes_only_this_runs_leases_forward(api_user) -> None:
    gpu = agent(concurrency=3)
    soon = timezone.now() + timedelta(seconds=1)
    mine = started_job(api_user, gpu, lease_until=soon, attempts=2)
    taken_up = started_job(api_user, gpu, lease_until=soon, attempts=3)  # another process's attempt now
    other = started_job(api_user, gpu, lease_until=soon)

    assert leases.renew({mine.pk: 2, taken_up.pk: 2}) == 1

    for job in (mine, taken_up, other):
        job.refresh_from_db()
    assert mine.lease_until > soon + timedelta(seconds=Conf.LEASE_SECONDS / 2)
    assert taken_up.lease_until == soon and other.lease_until == soon


def test_a_process_heartbeat_keeps_its_running_job_and_takes_up_a_dead_ones(
    api_user, monkeypatch: pytest.MonkeyPatch, handed_to_workers
) -> None:
    monkeypatch.setattr(Conf, "LEASE_SECONDS", 0.6)
    gpu = agent(concurrency=2)
    mine = started_job(api_user, gpu, lease_until=leases.lease_end())
    dead = started_job(api_user, gpu, lease_until=leases.lease_end())
    taken: list[bool] = []
    holder = leases.Holder()

    holder.hold(mine, reclaim=lambda: taken.append(bool(jobs.take_up_expired())))
    time.sleep(1.5)  # two and a half leases: only renewal keeps `mine`
    holder.wake.set()

    mine.refresh_from_db()
    dead.refresh_from_db()
    assert mine.state == State.STARTED and mine.lease_until > timezone.now()
    assert dead.state == State.QUEUED and dead.agent is None
    assert True in taken


# --- a stale run cannot end the job ---------------------------------------------------------------


def test_a_run_whose_lease_was_taken_up_cannot_end_the_job(api_user, callbacks_queued, handed_to_workers) -> None:
    gpu = agent()
    job = waiting_job(api_user)
    dispatch()
    stale = start(job.pk)  # attempt 1, whose process then froze
    assert stale is not None
    Job.objects.filter(pk=job.pk).update(lease_until=ago(1))
    dispatch_periodically()
    fresh = start(job.pk)  # attempt 2, on the same free agent
    assert fresh is not None and fresh.attempts == 2 and fresh.agent == gpu

    with pytest.raises(Exception, match="meanwhile"):
        jobs.complete(stale, output="from the stale run", lease_until=None)
    jobs.complete(fresh, output="from the fresh run", lease_until=None)

    job.refresh_from_db()
    assert job.state == State.COMPLETED and job.output == "from the fresh run"
    assert callbacks_queued == [job.pk]


# --- cancel keeps the slot until the backend request ended ---------------------------------------


def test_a_cancelled_job_holds_its_slot_until_its_backend_request_has_ended(api_user, image, handed_to_workers) -> None:
    with FakeOllama(chunk_delay=0.25) as fake:  # about 4 s to stream the whole reply
        gpu = agent(base_url=fake.url)
        job, nxt = waiting_job(api_user, image=image), waiting_job(api_user, image=image)
        dispatch()
        assert handed_to_workers == [job.pk]
        running = threading.Thread(target=run_assigned, args=(job.pk,))
        running.start()
        until(lambda: fake.in_flight == 1)

        jobs.cancel(Job.objects.get(pk=job.pk))
        dispatch()

        # Cancelled, but the backend is still answering: the slot is not free.
        assert Job.objects.get(pk=job.pk).state == State.CANCELLED
        assert fake.in_flight == 1 and not work_to_assign() and handed_to_workers == [job.pk]

        running.join(10)
        until(lambda: fake.in_flight == 0, 2)  # the client closed it; the fake notices at its next chunk
        # The run let go when its request ended, and handed the slot to the next job itself.
        assert Job.objects.get(pk=job.pk).lease_until is None
        assert Job.objects.get(pk=nxt.pk).agent == gpu
        assert handed_to_workers == [job.pk, nxt.pk]
        assert fake.max_in_flight == 1


def test_a_job_cancelled_before_it_started_frees_its_slot_at_once(api_user, handed_to_workers) -> None:
    agent()
    job, nxt = waiting_job(api_user), waiting_job(api_user)
    dispatch()

    jobs.cancel(Job.objects.get(pk=job.pk))
    dispatch()

    assert handed_to_workers == [job.pk, nxt.pk]


def test_an_agent_removed_while_its_job_runs_leaves_nothing_started(api_user, image, handed_to_workers) -> None:
    with FakeOllama(chunk_delay=0.1) as fake:
        gpu = agent(base_url=fake.url)
        job = waiting_job(api_user, image=image)
        dispatch()
        running = threading.Thread(target=run_assigned, args=(job.pk,))
        running.start()
        until(lambda: fake.in_flight == 1)

        gpu.delete()
        fake.mode = "refuse"  # and its backend went away with it
        running.join(15)

    job.refresh_from_db()
    assert job.state in (State.FAILED, State.COMPLETED), job.status
    assert job.lease_until is None

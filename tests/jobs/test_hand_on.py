"""dispatch.hand_on: the slot a finished run let go goes straight to the oldest job its agent can run."""

from __future__ import annotations

from functools import partial

import pytest
from django.db import transaction
from django.test.utils import CaptureQueriesContext

from agents.clients.base import AgentUnavailable
from agents.models import Agent, AgentModel, Capability
from imagetotext.dispatch import hand_on
from imagetotext.models import Job, State
from tests.jobs.test_dispatch import agent, jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_hint_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """end_run's hint that the queue is full starts unset, and what a test leaves of it is undone."""
    monkeypatch.setattr("imagetotext.tasks._queue_full", False)


def running_on(gpu: Agent, owner) -> Job:
    (job,) = jobs(owner, 1)
    Job.objects.filter(pk=job.pk).update(agent=gpu, state=State.STARTED, attempts=1)
    return job


def ended(job: Job) -> None:
    """The run ended and let go of its slot, as end_run's save does."""
    Job.objects.filter(pk=job.pk).update(state=State.COMPLETED, lease_until=None)


def test_the_freed_slot_goes_to_the_oldest_job_waiting_for_the_agents_models(api_user) -> None:
    gpu = agent("gpu")
    done = running_on(gpu, api_user)
    jobs(api_user, 1, model="other:model")  # older, but not a model this agent offers
    first, second = jobs(api_user, 2)

    with transaction.atomic():
        ended(done)
        with CaptureQueriesContext(transaction.get_connection()) as queries:
            assigned = hand_on(gpu.pk)

    assert [(a.job_id, a.agent.pk) for a in assigned] == [(first.pk, gpu.pk)]
    assert Job.objects.get(pk=first.pk).agent_id == gpu.pk and Job.objects.get(pk=second.pk).agent_id is None
    assert not any("advisory" in query["sql"] for query in queries)  # no dispatch lock
    assert len(queries) == 3  # the agent and its load, the waiting jobs, the claim


def test_a_job_that_already_failed_on_the_agent_is_passed_over(api_user) -> None:
    gpu = agent("gpu")
    done = running_on(gpu, api_user)
    tried, fresh = jobs(api_user, 2)
    Job.objects.filter(pk=tried.pk).update(tried_agents=[gpu.pk])

    ended(done)
    assert [a.job_id for a in hand_on(gpu.pk)] == [fresh.pk]


def test_an_agent_still_full_gets_nothing(api_user) -> None:
    """Its concurrency was lowered while it ran two jobs: one ending leaves it at its limit."""
    gpu = agent("gpu", concurrency=2)
    done, still = running_on(gpu, api_user), running_on(gpu, api_user)
    jobs(api_user, 1)
    Agent.objects.filter(pk=gpu.pk).update(concurrency=1)

    ended(done)
    assert hand_on(gpu.pk) == []
    assert Job.objects.filter(agent=gpu).exclude(pk__in=[done.pk, still.pk]).count() == 0


def test_an_agent_gone_offline_or_disabled_gets_nothing(api_user) -> None:
    gpu = agent("gpu")
    done = running_on(gpu, api_user)
    jobs(api_user, 1)
    ended(done)

    Agent.objects.filter(pk=gpu.pk).update(online=False)
    assert hand_on(gpu.pk) == []
    Agent.objects.filter(pk=gpu.pk).update(online=True, enabled=False)
    assert hand_on(gpu.pk) == []
    assert hand_on(None) == []


def test_a_text_only_model_of_the_agent_takes_no_image_job(api_user) -> None:
    gpu = agent("gpu")
    AgentModel.objects.create(agent=gpu, name="mistral", capability=Capability.TEXT)
    done = running_on(gpu, api_user)
    jobs(api_user, 1, model="mistral")

    ended(done)
    assert hand_on(gpu.pk) == []


def test_a_run_ending_under_load_hands_its_slot_on_and_a_failover_dispatches_the_queue(api_user, monkeypatch) -> None:
    """end_run: an ended job's slot goes through hand_on; a job sent back to the queue through the dispatcher."""
    from imagetotext import tasks

    calls: list[str] = []
    real_hand_on, real_assign = tasks.hand_on, tasks.assign_waiting_jobs
    monkeypatch.setattr(tasks, "hand_on", lambda agent_id: calls.append("hand_on") or real_hand_on(agent_id))
    monkeypatch.setattr(tasks, "assign_waiting_jobs", lambda: calls.append("dispatch") or real_assign())
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)
    gpu, spare = agent("gpu"), agent("spare")
    done = running_on(gpu, api_user)
    done = Job.objects.select_related("agent").get(pk=done.pk)
    waiting = jobs(api_user, 1)[0]

    tasks.end_run(done, 1, lambda: tasks.complete(done, output="ok", lease_until=None), None)
    assert calls == ["hand_on"] and Job.objects.get(pk=waiting.pk).agent_id == gpu.pk

    calls.clear()
    Job.objects.filter(pk=waiting.pk).update(state=State.STARTED, attempts=1)
    failing = Job.objects.select_related("agent").get(pk=waiting.pk)
    settle = partial(tasks.fail_over_or_fail, failing, gpu, AgentUnavailable("gone"))

    tasks.end_run(failing, 1, settle, None)

    assert calls == ["dispatch"]  # it needs another agent: the whole queue is dispatched
    assert Job.objects.get(pk=waiting.pk).agent_id == spare.pk


def test_while_the_queue_stays_full_a_run_ending_hands_on_without_asking_first(api_user, monkeypatch) -> None:
    """The hint: once a slot found a taker, the next ending tries hand_on before work_to_assign's
    question; once one finds none, the question comes first again."""
    from imagetotext import tasks

    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)
    gpu = agent("gpu")
    first = Job.objects.select_related("agent").get(pk=running_on(gpu, api_user).pk)
    second, third = jobs(api_user, 2)

    def end(job: Job) -> list[str]:
        with CaptureQueriesContext(transaction.get_connection()) as queries:
            tasks.end_run(job, 1, lambda: tasks.complete(job, output="ok", lease_until=None), None)
        return [query["sql"] for query in queries]

    asked = end(first)  # the queue looked empty before: asked first, then handed on
    assert any("EXISTS" in sql for sql in asked) and Job.objects.get(pk=second.pk).agent_id == gpu.pk

    Job.objects.filter(pk=second.pk).update(state=State.STARTED, attempts=1)
    straight = end(Job.objects.select_related("agent").get(pk=second.pk))
    assert not any("EXISTS" in sql for sql in straight)  # the hint: straight to hand_on
    assert Job.objects.get(pk=third.pk).agent_id == gpu.pk

    Job.objects.filter(pk=third.pk).update(state=State.STARTED, attempts=1)
    end(Job.objects.select_related("agent").get(pk=third.pk))  # nothing left to take: the hint goes
    assert tasks._queue_full is False
    assert Job.objects.filter(state=State.QUEUED).count() == 0


def test_a_job_arriving_for_another_agent_is_still_dispatched_when_the_hint_finds_no_taker(
    api_user, monkeypatch
) -> None:
    from imagetotext import tasks

    monkeypatch.setattr(tasks, "_queue_full", True)
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)
    gpu, other = agent("gpu"), agent("other", model="other:model")
    done = Job.objects.select_related("agent").get(pk=running_on(gpu, api_user).pk)
    waiting = jobs(api_user, 1, model="other:model")[0]  # gpu cannot run it; other is free

    tasks.end_run(done, 1, lambda: tasks.complete(done, output="ok", lease_until=None), None)

    assert Job.objects.get(pk=waiting.pk).agent_id == other.pk
    assert tasks._queue_full is False

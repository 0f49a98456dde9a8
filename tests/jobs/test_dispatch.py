"""Which agent gets a queued job, and never more jobs than its concurrency."""

from __future__ import annotations

import pytest

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.dispatch import dispatch, queue_position, work_to_assign
from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def handed_to_workers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Job ids given to django-q2, instead of running them."""
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


def agent(name: str, concurrency: int = 1, priority: int = 0, model: str = "llava:7b") -> Agent:
    row = Agent.objects.create(
        name=name, kind=Kind.OLLAMA, base_url=f"http://{name}:1", concurrency=concurrency, priority=priority
    )
    row.mark_online(Discovery("1", [DiscoveredModel(model, Capability.VISION)]))
    return row


def jobs(owner, count: int, model: str = "llava:7b") -> list[Job]:
    return [Job.objects.create(owner=owner, model=model, prompt="Describe") for _ in range(count)]


def test_a_burst_never_exceeds_each_agents_concurrency(api_user, handed_to_workers) -> None:
    small, big = agent("small", concurrency=1), agent("big", concurrency=3)
    jobs(api_user, 10)

    dispatch()
    dispatch()  # a second pass must not hand out more

    assert len(handed_to_workers) == 4
    assert Job.objects.filter(agent=small).count() == 1
    assert Job.objects.filter(agent=big).count() == 3
    assert Job.objects.filter(agent__isnull=True, state=State.QUEUED).count() == 6


def test_a_freed_slot_goes_to_the_oldest_waiting_job(api_user, handed_to_workers) -> None:
    agent("only")
    first, second, third = jobs(api_user, 3)
    dispatch()
    Job.objects.filter(pk=first.pk).update(state=State.COMPLETED, lease_until=None)  # its run let go

    dispatch()

    assert handed_to_workers == [first.pk, second.pk]
    assert Job.objects.get(pk=third.pk).agent is None


def test_an_ended_job_whose_run_has_not_let_go_keeps_its_slot(api_user, handed_to_workers) -> None:
    """A cancelled job's backend request may still be running: the slot is not free yet."""
    agent("only")
    first, second = jobs(api_user, 2)
    dispatch()
    Job.objects.filter(pk=first.pk).update(state=State.CANCELLED)  # the lease is still held

    dispatch()
    assert not work_to_assign()
    assert handed_to_workers == [first.pk]

    Job.objects.filter(pk=first.pk).update(lease_until=None)
    assert work_to_assign()
    dispatch()
    assert handed_to_workers == [first.pk, second.pk]


def test_the_least_busy_agent_relative_to_concurrency_wins(api_user, handed_to_workers) -> None:
    busy, idle = agent("busy", concurrency=2), agent("idle", concurrency=4)
    Job.objects.create(owner=api_user, model="llava:7b", agent=busy, state=State.STARTED)
    [job] = jobs(api_user, 1)

    dispatch()

    assert Job.objects.get(pk=job.pk).agent == idle


def test_equally_busy_agents_are_chosen_by_priority(api_user, handed_to_workers) -> None:
    agent("low", priority=0)
    high = agent("high", priority=5)
    [job] = jobs(api_user, 1)

    dispatch()

    assert Job.objects.get(pk=job.pk).agent == high


def test_offline_disabled_and_unrelated_agents_get_nothing(api_user, handed_to_workers) -> None:
    agent("down").mark_offline("connection refused")
    off = agent("off")
    off.enabled = False
    off.save()
    agent("other", model="gemma3:4b")
    jobs(api_user, 2)

    dispatch()

    assert handed_to_workers == []


def test_agents_a_job_already_failed_on_are_not_tried_again(api_user, handed_to_workers) -> None:
    tried = agent("tried", priority=9)
    fresh = agent("fresh")
    [job] = jobs(api_user, 1)
    Job.objects.filter(pk=job.pk).update(tried_agents=[tried.pk])

    dispatch()

    assert Job.objects.get(pk=job.pk).agent == fresh


def test_queue_position_counts_earlier_waiting_jobs_for_the_same_model(api_user) -> None:
    first, second = jobs(api_user, 2)
    jobs(api_user, 1, model="gemma3:4b")

    assert queue_position(first) == 1
    assert queue_position(second) == 2


def test_work_to_assign_needs_a_waiting_job_and_a_free_usable_slot(api_user) -> None:
    assert not work_to_assign()  # nothing at all
    gpu = agent("gpu", concurrency=2)
    assert not work_to_assign()  # a free slot, but nothing waits
    first, second, third = jobs(api_user, 3)
    assert work_to_assign()
    Job.objects.filter(pk__in=[first.pk, second.pk]).update(agent=gpu, state=State.STARTED)
    assert not work_to_assign()  # every slot busy
    Job.objects.filter(pk=first.pk).update(state=State.COMPLETED)
    assert work_to_assign()  # a finished job frees its slot
    Agent.objects.filter(pk=gpu.pk).update(online=False)
    assert not work_to_assign()  # an offline agent's slots do not count
    Agent.objects.filter(pk=gpu.pk).update(online=True, enabled=False)
    assert not work_to_assign()  # nor a disabled one's
    Agent.objects.filter(pk=gpu.pk).update(enabled=True)
    Job.objects.filter(pk=third.pk).update(state=State.CANCELLED)
    assert not work_to_assign()  # the only waiting job went away


def test_work_to_assign_looks_only_at_agents_that_offer_a_waiting_model(api_user) -> None:
    busy = agent("busy", concurrency=1, model="llava:7b")
    agent("idle", concurrency=4, model="gemma3:4b")
    running, waiting = jobs(api_user, 2)
    Job.objects.filter(pk=running.pk).update(agent=busy, state=State.STARTED)
    assert not work_to_assign()  # an idle agent of another model cannot take it
    jobs(api_user, 1, model="gemma3:4b")
    assert work_to_assign()


def test_a_finished_job_that_was_not_let_go_still_holds_its_slot(api_user, handed_to_workers) -> None:
    from django.utils import timezone

    gpu = agent("gpu", concurrency=1)
    done, waiting = jobs(api_user, 2)
    Job.objects.filter(pk=done.pk).update(agent=gpu, state=State.CANCELLED, lease_until=timezone.now())
    assert not work_to_assign() and dispatch() == []  # its backend request may still be running
    Job.objects.filter(pk=done.pk).update(lease_until=None)
    assert dispatch() == [waiting.pk]


def test_a_long_queue_is_read_a_page_at_a_time(api_user, handed_to_workers) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    agent("gpu", concurrency=2)
    queued = jobs(api_user, 60)
    with CaptureQueriesContext(connection) as queries:
        assert dispatch() == [queued[0].pk, queued[1].pk]
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and "ORDER BY" in q["sql"]]
    assert any(" LIMIT 8" in sql for sql in reads), reads  # not the whole queue (the first page)


def test_jobs_passed_over_move_the_next_page_on(api_user, handed_to_workers) -> None:
    agent("gpu", concurrency=1, model="llava:7b")
    other = Agent.objects.create(name="other", kind=Kind.OLLAMA, base_url="http://other:1")
    tried = jobs(api_user, 12)
    Job.objects.filter(pk__in=[j.pk for j in tried]).update(tried_agents=[Agent.objects.get(name="gpu").pk])
    fresh = jobs(api_user, 1)
    assert other.pk and dispatch() == [fresh[0].pk]  # found on the second page, after 12 passed over


def test_dispatchers_running_at_once_never_exceed_a_concurrency(api_user, handed_to_workers) -> None:
    import threading

    from django.db import connections

    agent("one", concurrency=2)
    agent("two", concurrency=1)
    jobs(api_user, 20)
    start = threading.Barrier(6)

    def dispatcher() -> None:
        try:
            start.wait(5)
            for _ in range(3):
                dispatch()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert Job.objects.filter(agent__name="one").count() == 2
    assert Job.objects.filter(agent__name="two").count() == 1
    assert sorted(handed_to_workers) == sorted(Job.objects.filter(agent__isnull=False).values_list("pk", flat=True))


def test_a_model_lookup_is_kept_for_a_moment_and_forgotten_when_an_agent_changes(api_user, monkeypatch) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from imagetotext.conf import Conf
    from imagetotext.errors import Refusal
    from imagetotext.jobs import usable_model

    monkeypatch.setattr(Conf, "MODEL_LOOKUP_SECONDS", 60.0)
    gpu = agent("gpu")
    assert usable_model("llava:7b").name == "llava:7b"
    with CaptureQueriesContext(connection) as queries:
        assert usable_model("llava:7b").name == "llava:7b"
    assert len(queries) == 0  # kept
    gpu.mark_offline("gone")  # a save: this process forgets at once
    with pytest.raises(Refusal) as refused:
        usable_model("llava:7b")
    assert refused.value.status == 405
    monkeypatch.setattr(Conf, "MODEL_LOOKUP_SECONDS", 0.0)  # another process's change: seen once the time is up
    Agent.objects.filter(pk=gpu.pk).update(online=True)
    assert usable_model("llava:7b").name == "llava:7b"

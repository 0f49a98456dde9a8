"""Callbacks that survive a crash: the delivery a job owes is written with its end (an outbox), and
whatever is due and unclaimed is sent by send_overdue(), from any process, one sender at a time.

Crashes are played in one process: a lost task is one the broker never gets, a sender that
died is a claim taken and never recorded; "time passes" moves the due time into the past. A
test without transaction=True never commits, so the task a job's end enqueues on commit is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from imagetotext import callbacks, jobs, tasks
from imagetotext.callbacks import claim, send_delivery, send_overdue
from imagetotext.models import CallbackDelivery, DeliveryState, Job, Outcome, State
from tests.jobs.test_callbacks import (  # noqa: F401  (fixtures)
    Broker,
    Receiver,
    attempts,
    broker,
    callback_conf,
    receiver,
    time_passes,
)
from tests.jobs.test_callbacks_idempotency import key_of


def started_job(owner: Any, reply_to: str) -> Job:
    return Job.objects.create(owner=owner, model="llava:7b", reply_to=reply_to, state=State.STARTED, attempts=1)


def owed(job: Job) -> CallbackDelivery:
    return job.callback_deliveries.get()


def at_once(count: int, work: Callable[[], object]) -> list[object]:
    """Run `work` in `count` threads that start together; each closes its own connection."""
    start = threading.Barrier(count)
    results: list[object] = []

    def run() -> None:
        try:
            start.wait()
            results.append(work())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


# Owed with the job's end ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_task_was_lost_is_sent_by_send_overdue_with_its_stored_key(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    broker.lose = True  # the process dies between the commit and async_task
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="A wolf by a lake", lease_until=None)
    delivery = owed(job)
    broker.lose = False
    assert send_overdue() == 0  # still held for the task that was to send it

    time_passes(delivery)
    assert send_overdue() == 1
    broker.run()

    [request] = receiver.requests
    assert key_of(request) == delivery.key
    assert request.json()["textOutputs"] == [{"text": "A wolf by a lake"}]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 1)


@pytest.mark.django_db(transaction=True)
def test_a_job_ending_outside_a_transaction_is_not_ended_without_the_delivery_it_owes(
    admin_user: Any, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = started_job(admin_user, "https://hooks.example.com/done")

    def no_room(**fields: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(CallbackDelivery.objects, "create", no_room)
    with pytest.raises(RuntimeError):
        jobs.complete(job, output="text", lease_until=None)

    job.refresh_from_db()
    assert job.state == State.STARTED and job.output == ""
    assert broker.tasks == []


@pytest.mark.django_db(transaction=True)
def test_a_job_that_ends_is_called_back_at_once_without_waiting_for_send_overdue(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    jobs.fail(job, "No agent has llava:7b", "ModelNotFound", lease_until=None)

    broker.run()

    [request] = receiver.requests
    assert key_of(request) == owed(job).key
    assert request.json()["responseStatus"]["errorCode"] == "ModelNotFound"
    assert send_overdue() == 0


# A sender that died ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_delivery_whose_sender_died_mid_send_is_sent_again_with_the_same_key(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)
    assert claim(delivery.pk, 1) is not None  # its sender took attempt 1, then was SIGKILLed

    time_passes(delivery)  # the claim ran out
    assert send_overdue() == 1
    broker.run()

    [request] = receiver.requests
    assert (key_of(request), request.headers["X-Callback-Attempt"]) == (delivery.key, "2")
    lost, made = attempts(job)
    assert (lost.number, lost.outcome, lost.idempotency_key) == (1, Outcome.UNKNOWN, delivery.key)
    assert "stopped before it recorded" in lost.error
    assert (made.number, made.outcome, made.idempotency_key) == (2, Outcome.DELIVERED, delivery.key)


@pytest.mark.django_db
def test_a_delivery_whose_claim_is_current_is_left_to_its_sender(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)
    claim(delivery.pk, 1)

    assert send_overdue() == 0
    send_delivery(delivery.pk, 1)  # a late duplicate of the task: attempt 1 is taken

    assert broker.tasks == [] and receiver.requests == []
    assert attempts(job) == []


@pytest.mark.django_db
def test_the_last_attempts_sender_dying_gives_the_delivery_up_without_a_sixth_request(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)
    CallbackDelivery.objects.filter(pk=delivery.pk).update(attempts=4)
    claim(delivery.pk, 5)  # attempt 5 of 5, whose process then died

    time_passes(delivery)
    send_overdue()
    broker.run()

    assert receiver.requests == []
    delivery.refresh_from_db()
    assert (delivery.state, delivery.due_at) == (DeliveryState.GIVEN_UP, None)
    [lost] = attempts(job)
    assert (lost.number, lost.outcome) == (5, Outcome.UNKNOWN)


def a_slow_sender_is_overtaken(job: Job, receiver: Receiver, broker: Broker) -> CallbackDelivery:
    """Attempt 1's sender outlives its claim, and another process makes attempt 2 (answered 500)."""
    jobs.complete(job, output="text", lease_until=None)
    slow = claim(owed(job).pk, 1)
    assert slow is not None
    time_passes(slow)
    receiver.status = 500
    send_overdue()
    broker.run()
    return slow


@pytest.mark.django_db
def test_a_sender_slower_than_its_claim_cannot_undo_the_retry_of_the_one_that_took_over(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    slow = a_slow_sender_is_overtaken(job, receiver, broker)
    taken_over = owed(job)

    callbacks.record(slow, 1, callbacks.Result(Outcome.FAILED, error="Could not connect"))

    after = owed(job)
    assert (after.state, after.attempts, after.due_at) == (DeliveryState.PENDING, 2, taken_over.due_at)


@pytest.mark.django_db
def test_a_sender_slower_than_its_claim_that_delivered_ends_the_delivery(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    slow = a_slow_sender_is_overtaken(job, receiver, broker)

    callbacks.record(slow, 1, callbacks.Result(Outcome.DELIVERED, 200))

    after = owed(job)
    assert (after.state, after.due_at) == (DeliveryState.DELIVERED, None)
    assert send_overdue() == 0


# Many processes at once -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_send_overdue_calls_send_a_due_delivery_once(
    admin_user: Any, receiver: Receiver, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.lose = True
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)
    time_passes(delivery)
    broker.lose, broker.inline = False, True
    both_read = threading.Barrier(2)
    read = callbacks.overdue

    def overdue_then_wait() -> list[Any]:
        rows = read()
        both_read.wait(10)  # each has seen the delivery due before either takes it
        return rows

    monkeypatch.setattr(callbacks, "overdue", overdue_then_wait)

    enqueued = at_once(2, send_overdue)

    assert sorted(enqueued) == [0, 1]  # type: ignore[type-var]
    assert len(receiver.requests) == 1
    assert [a.number for a in attempts(job)] == [1]


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_attempt_send_it_once(admin_user: Any, receiver: Receiver, broker: Broker) -> None:
    broker.lose = True
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)

    at_once(2, lambda: send_delivery(delivery.pk, 1))

    assert len(receiver.requests) == 1
    assert [a.number for a in attempts(job)] == [1]


# Who calls send_overdue -----------------------------------------------------------------------


@pytest.mark.django_db
def test_send_overdue_costs_one_query_when_nothing_is_due(
    admin_user: Any, receiver: Receiver, broker: Broker, django_assert_num_queries: Any
) -> None:
    waiting, done = started_job(admin_user, receiver.url), started_job(admin_user, receiver.url)
    jobs.complete(waiting, output="text", lease_until=None)  # owed, its task not yet run
    jobs.complete(done, output="text", lease_until=None)
    send_delivery(owed(done).pk, 1)

    with django_assert_num_queries(1):
        assert send_overdue() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("caller", [tasks.dispatch_periodically, tasks.reclaim], ids=["safety net", "heartbeat"])
def test_the_safety_net_and_the_heartbeat_send_overdue_callbacks(
    caller: Callable[[], object], admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    job = started_job(admin_user, receiver.url)
    jobs.complete(job, output="text", lease_until=None)
    delivery = owed(job)
    CallbackDelivery.objects.filter(pk=delivery.pk).update(due_at=timezone.now() - timedelta(seconds=1))

    caller()

    assert broker.tasks == [(delivery.pk, 1)]

"""Callbacks a late receiver can deduplicate: one Idempotency-Key per delivery, and "unknown" attempts.

Every receiver is a real HTTP server on loopback; the callback timeout is shortened so that
a receiver can answer after it.
"""

from __future__ import annotations

import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule

from imagetotext import callbacks, jobs
from imagetotext.callbacks import deliver, owe
from imagetotext.conf import Conf
from imagetotext.models import CallbackAttempt, CallbackDelivery, DeliveryState, Job, Outcome
from tests.jobs.test_callbacks import (  # noqa: F401  (fixtures)
    Broker,
    Receiver,
    attempts,
    broker,
    callback_conf,
    deliver_first,
    finished_job,
    receiver,
    retry_due_in,
    run_due_retries,
    run_next_retry,
)

TIMEOUT = 0.3


@pytest.fixture(autouse=True)
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "CALLBACK_TIMEOUT", TIMEOUT)


def key_of(request: Any) -> str:
    """The Idempotency-Key header's value: a Structured Field string, so in quotes."""
    value = request.headers["Idempotency-Key"]
    assert value.startswith('"') and value.endswith('"')
    return str(value[1:-1])


@pytest.fixture
def resets_before_the_body() -> Iterator[str]:
    """A receiver that reads the request's headers, then resets the connection, body unread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: the body cannot fit

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            received = b""
            while b"\r\n\r\n" not in received and (chunk := connection.recv(1024)):
                received += chunk
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    listener.close()


# One key per delivery --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_receiver_that_answers_after_the_timeout_gets_every_attempt_with_one_key_and_no_more(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    receiver.delay = TIMEOUT + 0.5  # it accepts each one, too late for the sender to hear
    job = finished_job(admin_user, receiver.url, output="A wolf by a lake")

    delivery = deliver_first(job)
    run_due_retries(delivery, broker)

    assert len(receiver.requests) == Conf.CALLBACK_ATTEMPTS == 5
    [key] = {key_of(request) for request in receiver.requests}
    assert [request.headers["X-Callback-Attempt"] for request in receiver.requests] == ["1", "2", "3", "4", "5"]
    assert len({request.body for request in receiver.requests}) == 1
    recorded = attempts(job)
    assert [(a.number, a.outcome, a.idempotency_key) for a in recorded] == [
        (n, Outcome.UNKNOWN, key) for n in range(1, 6)
    ]
    assert key == delivery.key
    assert all(a.status_code is None and "Sent, but no answer: Timed out" in a.error for a in recorded)
    assert (delivery.state, delivery.attempts, delivery.due_at) == (DeliveryState.GIVEN_UP, 5, None)


@pytest.mark.django_db
def test_a_retry_after_a_restart_sends_the_stored_key(admin_user: Any, receiver: Receiver, broker: Broker) -> None:
    receiver.status = 503
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    receiver.status = 200

    # A new process knows only the row: send_overdue enqueues it, a worker makes the attempt.
    run_next_retry(CallbackDelivery.objects.get(pk=delivery.pk), broker)

    first, second = receiver.requests
    assert key_of(second) == key_of(first) == delivery.key
    assert [(a.outcome, a.idempotency_key) for a in attempts(job)] == [
        (Outcome.FAILED, key_of(first)),
        (Outcome.DELIVERED, key_of(first)),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_a_job_run_again_is_called_back_with_a_new_key(
    api_client: Client, ollama_agent: Any, receiver: Receiver, png_bytes: bytes
) -> None:
    data = {"image": SimpleUploadedFile("a.png", png_bytes), "Model": "llava:7b", "ReplyTo": receiver.url}
    api_client.post("/api/QueueImageToText", data)
    job = Job.objects.get()

    jobs.retry(job)

    first, second = receiver.requests
    assert first.json()["refId"] == second.json()["refId"] == job.ref_id
    assert key_of(first) != key_of(second)
    assert [(a.number, a.idempotency_key) for a in attempts(job)] == [(1, key_of(first)), (1, key_of(second))]
    owed = job.callback_deliveries.order_by("pk")
    assert [(d.key, d.state) for d in owed] == [
        (key_of(first), DeliveryState.DELIVERED),
        (key_of(second), DeliveryState.DELIVERED),
    ]


@pytest.mark.django_db
def test_the_retries_of_a_delivery_stop_once_the_job_ends_again(
    admin_user: Any, receiver: Receiver, broker: Broker
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="first run")
    stale = deliver_first(job)
    receiver.status = 200
    again = deliver_first(job)  # the run again's end owes a new delivery

    run_next_retry(stale, broker)  # the first delivery's retry comes due

    assert [key_of(request) for request in receiver.requests] == [stale.key, again.key]
    assert stale.key != again.key
    assert len(attempts(job)) == 2
    assert (stale.state, stale.due_at) == (DeliveryState.SUPERSEDED, None)


@pytest.mark.django_db
def test_a_retry_schedule_stored_before_the_outbox_goes_on_in_it_with_its_key(
    admin_user: Any, receiver: Receiver, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q import scheduler

    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    old_key = "55555555-5555-4555-8555-555555555555"
    CallbackAttempt.objects.create(job=job, number=1, idempotency_key=old_key, outcome=Outcome.FAILED)
    Schedule.objects.create(  # as the previous version left it
        func="imagetotext.callbacks.deliver",
        args=f"{job.pk}, 2, {old_key!r}",
        schedule_type=Schedule.ONCE,
        repeats=-1,
        next_run=timezone.now() - timedelta(seconds=1),
    )
    queued: list[tuple[Any, ...]] = []

    def enqueue(func: str, *args: Any, **kwargs: Any) -> str:
        if func == "imagetotext.callbacks.deliver":
            queued.append(args)
        return uuid.uuid4().hex

    monkeypatch.setattr(scheduler, "async_task", enqueue)
    monkeypatch.setattr(scheduler, "close_old_django_connections", lambda: None)  # keep the test's connection
    scheduler.scheduler(broker=object())
    [args] = queued

    deliver(*args)
    delivery = job.callback_deliveries.get()
    run_next_retry(delivery, broker)

    assert [key_of(request) for request in receiver.requests] == [old_key] * 2
    assert [r.headers["X-Callback-Attempt"] for r in receiver.requests] == ["2", "3"]
    assert (delivery.key, delivery.state, delivery.attempts) == (old_key, DeliveryState.PENDING, 3)


@pytest.mark.django_db
def test_a_retry_stored_before_keys_existed_goes_on_with_the_latest_key(admin_user: Any, receiver: Receiver) -> None:
    job = finished_job(admin_user, receiver.url, output="text")
    old_key = "66666666-6666-4666-8666-666666666666"
    CallbackAttempt.objects.create(job=job, number=1, idempotency_key=old_key, outcome=Outcome.FAILED)

    deliver(job.pk, 2)  # a keyless retry Schedule's arguments

    [request] = receiver.requests
    assert (key_of(request), request.headers["X-Callback-Attempt"]) == (old_key, "2")
    assert job.callback_deliveries.get().state == DeliveryState.DELIVERED


@pytest.mark.django_db
def test_a_retry_stored_before_the_outbox_for_a_job_owed_anew_sends_nothing(
    admin_user: Any, receiver: Receiver
) -> None:
    job = finished_job(admin_user, receiver.url, output="text")
    CallbackAttempt.objects.create(job=job, number=1, idempotency_key=callbacks.new_key(), outcome=Outcome.FAILED)
    owe(job)  # run again since, and ended: the outbox owes its new result

    deliver(job.pk, 2, job.callback_attempts.get().idempotency_key)

    assert receiver.requests == []
    assert job.callback_deliveries.count() == 1


@pytest.mark.django_db
def test_a_retry_beyond_the_attempts_allowed_now_sends_nothing(
    admin_user: Any, receiver: Receiver, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    run_next_retry(delivery, broker)
    monkeypatch.setattr(Conf, "CALLBACK_ATTEMPTS", 2)  # lowered while attempt 3 waited for its backoff

    run_due_retries(delivery, broker)

    assert len(receiver.requests) == 2
    assert [a.number for a in attempts(job)] == [1, 2]
    assert delivery.state == DeliveryState.GIVEN_UP


# What each attempt came to -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_receiver_that_hangs_up_after_reading_the_request_is_recorded_as_unknown_and_retried(
    admin_user: Any, receiver: Receiver
) -> None:
    receiver.drop = True
    job = finished_job(admin_user, receiver.url, output="text")

    delivery = deliver_first(job)

    [request] = receiver.requests
    assert request.json()["textOutputs"] == [{"text": "text"}]
    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.UNKNOWN, None)
    assert attempt.error.startswith("Sent, but no answer: RemoteProtocolError")
    assert attempt.idempotency_key == delivery.key
    assert retry_due_in(delivery) is not None


@pytest.mark.django_db
def test_a_refused_connection_is_recorded_as_failed_and_retried_with_the_same_key(admin_user: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    job = finished_job(admin_user, f"http://127.0.0.1:{port}/hook", output="text")

    delivery = deliver_first(job)

    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.FAILED, None)
    assert attempt.error.startswith("Could not connect") and "refused" in attempt.error.lower()
    assert attempt.idempotency_key == delivery.key
    assert retry_due_in(delivery) is not None


@pytest.mark.django_db
def test_a_receiver_that_resets_before_reading_the_whole_request_is_recorded_as_failed(
    admin_user: Any, resets_before_the_body: str
) -> None:
    # Far more than the socket buffers hold, so the body cannot have been written in full.
    job = finished_job(admin_user, resets_before_the_body, output="x" * 16_000_000)

    delivery = deliver_first(job)

    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.FAILED, None)
    assert not attempt.error.startswith("Sent")
    assert retry_due_in(delivery) is not None


@pytest.mark.django_db
def test_the_admin_shows_each_attempts_outcome_and_key(admin_user: Any, receiver: Receiver, client: Client) -> None:
    receiver.drop = True
    job = finished_job(admin_user, receiver.url, output="text")
    delivery = deliver_first(job)
    client.force_login(admin_user)

    response = client.get(f"/admin/imagetotext/job/{job.pk}/change/")

    assert response.status_code == 200
    assert b"Unknown" in response.content
    assert response.content.count(delivery.key.encode()) == 2  # the attempt, and the delivery
    assert f"{delivery.key}: Pending after 1 attempt, next at".encode() in response.content

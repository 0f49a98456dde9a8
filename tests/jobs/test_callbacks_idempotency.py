"""Callbacks a late receiver can deduplicate: one Idempotency-Key per delivery, and "unknown" attempts.

Every receiver is a real HTTP server on loopback; the callback timeout is shortened so that
a receiver can answer after it.
"""

from __future__ import annotations

import ast
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
from imagetotext.callbacks import deliver
from imagetotext.conf import Conf
from imagetotext.models import Job, Outcome
from tests.jobs.test_callbacks import (  # noqa: F401  (fixtures)
    Receiver,
    attempts,
    callback_conf,
    finished_job,
    receiver,
    retries,
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


def run_next_retry(job: Job) -> None:
    """Run the retry as a worker would after a restart: only from the stored Schedule row."""
    retry = retries(job)[0]
    retry.delete()
    deliver(*ast.literal_eval(retry.args))


def run_due_retries(job: Job) -> None:
    while retries(job):
        run_next_retry(job)


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
    admin_user: Any, receiver: Receiver
) -> None:
    receiver.delay = TIMEOUT + 0.5  # it accepts each one, too late for the sender to hear
    job = finished_job(admin_user, receiver.url, output="A wolf by a lake")

    deliver(job.pk, 1, callbacks.new_key())
    run_due_retries(job)

    assert len(receiver.requests) == Conf.CALLBACK_ATTEMPTS == 5
    [key] = {key_of(request) for request in receiver.requests}
    assert [request.headers["X-Callback-Attempt"] for request in receiver.requests] == ["1", "2", "3", "4", "5"]
    assert len({request.body for request in receiver.requests}) == 1
    recorded = attempts(job)
    assert [(a.number, a.outcome, a.idempotency_key) for a in recorded] == [
        (n, Outcome.UNKNOWN, key) for n in range(1, 6)
    ]
    assert all(a.status_code is None and "Sent, but no answer: Timed out" in a.error for a in recorded)
    assert retries(job) == []


@pytest.mark.django_db
def test_the_retry_scheduled_before_a_restart_sends_the_stored_key(
    admin_user: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_q import scheduler

    receiver.status = 503
    job = finished_job(admin_user, receiver.url, output="text")
    deliver(job.pk, 1, callbacks.new_key())
    Schedule.objects.filter(func=callbacks.TASK).update(next_run=timezone.now() - timedelta(seconds=1))
    # A new process: django-q2's scheduler turns the stored row into the task that runs.
    queued: list[tuple[Any, ...]] = []

    def enqueue(func: str, *args: Any, **kwargs: Any) -> str:
        if func == callbacks.TASK:
            queued.append(args)
        return uuid.uuid4().hex

    monkeypatch.setattr(scheduler, "async_task", enqueue)
    monkeypatch.setattr(scheduler, "close_old_django_connections", lambda: None)  # keep the test's connection
    scheduler.scheduler(broker=object())
    receiver.status = 200
    [args] = queued
    deliver(*args)

    first, second = receiver.requests
    assert key_of(second) == key_of(first)
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


@pytest.mark.django_db
def test_the_retries_of_a_delivery_stop_once_the_job_run_again_is_delivered(
    admin_user: Any, receiver: Receiver
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="first run")
    deliver(job.pk, 1, "11111111-1111-4111-8111-111111111111")
    [stale] = retries(job)
    receiver.status = 200
    deliver(job.pk, 1, "22222222-2222-4222-8222-222222222222")  # the run again's delivery

    deliver(*ast.literal_eval(stale.args))

    assert [key_of(request) for request in receiver.requests] == [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    ]
    assert len(attempts(job)) == 2


@pytest.mark.django_db
def test_a_retry_scheduled_before_keys_existed_goes_on_with_the_latest_key(admin_user: Any, receiver: Receiver) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    deliver(job.pk, 1, "55555555-5555-4555-8555-555555555555")
    Schedule.objects.filter(func=callbacks.TASK).update(args=f"{job.pk}, 2")  # as the previous version stored it

    run_next_retry(job)

    assert [key_of(request) for request in receiver.requests] == ["55555555-5555-4555-8555-555555555555"] * 2
    [retry] = retries(job)
    assert ast.literal_eval(retry.args) == (job.pk, 3, "55555555-5555-4555-8555-555555555555")


@pytest.mark.django_db
def test_a_retry_beyond_the_attempts_allowed_now_sends_nothing(
    admin_user: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.status = 500
    job = finished_job(admin_user, receiver.url, output="text")
    deliver(job.pk, 1, callbacks.new_key())
    run_next_retry(job)
    monkeypatch.setattr(Conf, "CALLBACK_ATTEMPTS", 2)  # lowered while attempt 3 was scheduled

    run_due_retries(job)

    assert len(receiver.requests) == 2
    assert [a.number for a in attempts(job)] == [1, 2]


# What each attempt came to -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_receiver_that_hangs_up_after_reading_the_request_is_recorded_as_unknown_and_retried(
    admin_user: Any, receiver: Receiver
) -> None:
    receiver.drop = True
    job = finished_job(admin_user, receiver.url, output="text")

    deliver(job.pk, 1, callbacks.new_key())

    [request] = receiver.requests
    assert request.json()["textOutputs"] == [{"text": "text"}]
    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.UNKNOWN, None)
    assert attempt.error.startswith("Sent, but no answer: RemoteProtocolError")
    [retry] = retries(job)
    assert ast.literal_eval(retry.args) == (job.pk, 2, attempt.idempotency_key)


@pytest.mark.django_db
def test_a_refused_connection_is_recorded_as_failed_and_retried_with_the_same_key(admin_user: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    job = finished_job(admin_user, f"http://127.0.0.1:{port}/hook", output="text")

    deliver(job.pk, 1, "33333333-3333-4333-8333-333333333333")

    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.FAILED, None)
    assert attempt.error.startswith("Could not connect") and "refused" in attempt.error.lower()
    [retry] = retries(job)
    assert ast.literal_eval(retry.args) == (job.pk, 2, "33333333-3333-4333-8333-333333333333")


@pytest.mark.django_db
def test_a_receiver_that_resets_before_reading_the_whole_request_is_recorded_as_failed(
    admin_user: Any, resets_before_the_body: str
) -> None:
    # Far more than the socket buffers hold, so the body cannot have been written in full.
    job = finished_job(admin_user, resets_before_the_body, output="x" * 16_000_000)

    deliver(job.pk, 1, callbacks.new_key())

    [attempt] = attempts(job)
    assert (attempt.outcome, attempt.status_code) == (Outcome.FAILED, None)
    assert not attempt.error.startswith("Sent")
    assert len(retries(job)) == 1


@pytest.mark.django_db
def test_the_admin_shows_each_attempts_outcome_and_key(admin_user: Any, receiver: Receiver, client: Client) -> None:
    receiver.drop = True
    job = finished_job(admin_user, receiver.url, output="text")
    deliver(job.pk, 1, "44444444-4444-4444-8444-444444444444")
    client.force_login(admin_user)

    response = client.get(f"/admin/imagetotext/job/{job.pk}/change/")

    assert response.status_code == 200
    assert b"Unknown" in response.content
    assert b"44444444-4444-4444-8444-444444444444" in response.content

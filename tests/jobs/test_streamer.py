"""A running job's text: every piece to a streaming API client, a few refreshes a second to people."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from imagetotext import tasks
from imagetotext.db_threads import hold_no_connection
from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(tasks, "publish_text", lambda job_id, owner_id, text: sent.append(text))
    return sent


def test_each_piece_is_relayed_but_people_get_the_text_a_few_times_a_second(api_user, image, published) -> None:
    job = Job.objects.create(owner=api_user, image=image, model="llava:7b", state=State.STARTED)
    pieces: list[str] = []
    on_text = tasks.TextStream(job, relay=pieces.append)

    text = ""
    for n in range(50):
        text += f"w{n} "
        on_text(text)

    assert pieces == [f"w{n} " for n in range(50)]
    assert 1 <= len(published) <= 3
    assert published[0] == "w0 "
    assert published[-1] != text  # the last words wait for the job's end, which carries them


def test_a_cancelled_job_is_stopped_at_the_next_check(api_user, image, published, monkeypatch) -> None:
    job = Job.objects.create(owner=api_user, image=image, model="llava:7b", state=State.CANCELLED)
    monkeypatch.setattr(tasks, "CHECK_EVERY", 0.0)
    on_text = tasks.TextStream(job)

    assert on_text("Some text") is True


@pytest.mark.django_db(transaction=True)
def test_a_job_thread_holds_no_database_connection_while_it_waits(api_user, image, published, monkeypatch) -> None:
    job = Job.objects.create(owner=api_user, image=image, model="llava:7b", state=State.STARTED)
    monkeypatch.setattr(tasks, "CHECK_EVERY", 0.0)
    seen: dict[str, object] = {}

    def job_thread() -> None:
        hold_no_connection()  # as every thread of tasks.in_flight() does first
        stream = tasks.TextStream(job)
        seen["stopped"] = stream("Some text")
        seen["connection open"] = connection.connection is not None

    thread = threading.Thread(target=job_thread)
    thread.start()
    thread.join()

    assert seen == {"stopped": False, "connection open": False}
    assert Job.objects.get(pk=job.pk).output == "Some text"

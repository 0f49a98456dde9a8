"""The embedded broker wakes a waiting worker when a task arrives, instead of at its next poll."""

from __future__ import annotations

import threading
import time

import pytest
from django_q.conf import Conf
from django_q.signing import SignedPackage

from aiserver.broker import DoorbellORM, doorbells

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_waiting_worker_gets_a_new_task_at_once_not_at_its_next_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "POLL", 3.0)  # a poll would take this long
    broker = DoorbellORM(list_key="test-doorbell")
    broker.bell()  # bound before anything is queued, as a running pusher's is
    got: list[tuple[float, object]] = []

    def pusher() -> None:
        while not got:
            tasks = broker.dequeue()
            if tasks:
                got.append((time.monotonic(), tasks))

    thread = threading.Thread(target=pusher)
    thread.start()
    time.sleep(0.3)  # the pusher is waiting now
    sent = time.monotonic()
    DoorbellORM(list_key="test-doorbell").enqueue(SignedPackage.dumps({"id": "t1"}))
    thread.join(5)

    assert got, "the task never arrived"
    arrived, tasks = got[0]
    assert arrived - sent < 0.5
    assert len(tasks) == 1  # type: ignore[arg-type]


def test_a_bell_whose_process_is_gone_is_taken_down() -> None:
    folder = doorbells()
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "q-999999999.sock"
    stale.write_bytes(b"")  # a file where no socket listens
    DoorbellORM(list_key="test-doorbell").enqueue(SignedPackage.dumps({"id": "t2"}))
    assert not stale.exists()


def test_a_burst_of_tasks_is_claimed_together_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    monkeypatch.setattr(Conf, "BULK", 4)
    sender = DoorbellORM(list_key="test-burst")
    sent = [sender.enqueue(SignedPackage.dumps({"id": f"b{n}"})) for n in range(6)]
    pusher = DoorbellORM(list_key="test-burst")

    with CaptureQueriesContext(connection) as queries:
        first = pusher.dequeue()
    second, third = pusher.dequeue(), DoorbellORM(list_key="test-burst").claim()

    assert [pk for pk, _ in first] == sent[:4]  # oldest first, up to the bulk
    assert [pk for pk, _ in second] == sent[4:]
    assert third == []  # claimed ones are locked for everyone else
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(writes) == 1  # one statement for the four, in one transaction
    assert OrmQ.objects.filter(key="test-burst").count() == 6  # kept until acknowledged
    assert SignedPackage.loads(first[0][1])["id"] == "b0"

"""SQLite writers queue on a file lock: the next one starts as soon as the last one commits."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections, transaction

from imagetotext.models import TokenBucket

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded configuration's backend"),
]


def write_in_thread(key: str, hold: float, started: threading.Event, times: dict[str, float]) -> None:
    try:
        with transaction.atomic():
            times[f"{key} began"] = time.monotonic()
            started.set()
            TokenBucket.objects.create(key=key, tokens=1.0, updated_at="2026-01-01T00:00:00Z")
            time.sleep(hold)
        times[f"{key} committed"] = time.monotonic()
    finally:
        connections.close_all()


def test_a_waiting_writer_starts_the_moment_the_holder_commits() -> None:
    times: dict[str, float] = {}
    first_started, second_started = threading.Event(), threading.Event()
    first = threading.Thread(target=write_in_thread, args=("first", 0.5, first_started, times))
    first.start()
    first_started.wait(5)
    second = threading.Thread(target=write_in_thread, args=("second", 0.0, second_started, times))
    second.start()
    first.join(10)
    second.join(10)

    assert times["second began"] >= times["first committed"] - 0.005  # it did wait for the first
    # SQLite's own busy handler would sleep up to 100 ms between tries by now.
    assert times["second began"] - times["first committed"] < 0.03
    assert set(TokenBucket.objects.values_list("key", flat=True)) == {"first", "second"}


def test_a_transaction_that_fails_lets_the_next_writer_in() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        TokenBucket.objects.create(key="rolled back", tokens=1.0, updated_at="2026-01-01T00:00:00Z")
        raise RuntimeError("boom")
    times: dict[str, float] = {}
    started = threading.Event()
    writer = threading.Thread(target=write_in_thread, args=("after", 0.0, started, times))
    writer.start()
    writer.join(3)

    assert "after committed" in times
    assert list(TokenBucket.objects.values_list("key", flat=True)) == ["after"]

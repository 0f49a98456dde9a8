from __future__ import annotations

import pytest
from django.test import Client

from imagetotext.api.ratelimit import take
from imagetotext.conf import Conf
from imagetotext.models import ApiKey, TokenBucket

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_key_that_spends_its_requests_gets_a_429_with_retry_after(api_client: Client, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "RATE_LIMIT_PER_MINUTE", 3)

    statuses = [api_client.get("/api/GetTextGenerationStatus?JobId=1").status_code for _ in range(4)]

    assert statuses == [404, 404, 404, 429]
    response = api_client.get("/api/GetTextGenerationStatus?JobId=1")
    assert response.json()["responseStatus"]["errorCode"] == "TooManyRequests"
    assert 1 <= int(response["Retry-After"]) <= 20


def test_each_key_has_its_own_bucket(api_client: Client, api_user, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "RATE_LIMIT_PER_MINUTE", 1)
    other = Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(api_user, 'second')[1]}")

    api_client.get("/api/GetTextGenerationStatus?JobId=1")

    assert api_client.get("/api/GetTextGenerationStatus?JobId=1").status_code == 429
    assert other.get("/api/GetTextGenerationStatus?JobId=1").status_code == 404


def test_tokens_come_back_with_time(monkeypatch) -> None:
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    monkeypatch.setattr("imagetotext.api.ratelimit.timezone.now", lambda: now)
    assert take("t", 60) == 0 and all(take("t", 60) == 0 for _ in range(59))
    assert take("t", 60) == pytest.approx(1.0)

    monkeypatch.setattr("imagetotext.api.ratelimit.timezone.now", lambda: now + timedelta(seconds=2))
    assert take("t", 60) == 0


def test_zero_switches_the_limit_off(api_client: Client, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "RATE_LIMIT_PER_MINUTE", 0)

    assert all(api_client.get("/api/GetTextGenerationStatus?JobId=1").status_code == 404 for _ in range(5))


# --- batches: a busy caller costs a database write per batch, not per request ---------------


@pytest.fixture
def frozen_clock(monkeypatch):
    """The bucket's clock stands still (no refill); the process's credit clock is ours to move."""
    from django.utils import timezone

    now, ticks = timezone.now(), [1000.0]
    monkeypatch.setattr("imagetotext.api.ratelimit.timezone.now", lambda: now)
    monkeypatch.setattr("imagetotext.api.ratelimit.time.monotonic", lambda: ticks[0])
    return ticks


def tokens_counted(key: str) -> float:
    """What the database holds plus what this process holds as credit: what is left to spend."""
    from imagetotext.api import ratelimit

    credit = ratelimit._credits.get(key)
    return TokenBucket.objects.get(key=key).tokens + (credit.left if credit else 0)


def test_a_busy_caller_takes_its_tokens_in_batches(frozen_clock) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert all(take("busy", 600) == 0 for _ in range(50))

    writes = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(writes) <= 8  # 1, 2, 4, 8, 10, 10, 10, 10 tokens at a time: 55, not 50 writes
    assert tokens_counted("busy") == 600 - 50


def test_credit_left_when_time_passes_is_given_back(frozen_clock) -> None:
    assert all(take("back", 600) == 0 for _ in range(30))
    frozen_clock[0] += 5  # the caller paused: its credit in this process ran out

    assert take("back", 600) == 0

    assert tokens_counted("back") == 600 - 31


def test_batches_never_let_a_caller_past_its_limit(frozen_clock) -> None:
    allowed = sum(1 for _ in range(200) if take("capped", 120) == 0)

    assert allowed == 120


def test_two_processes_share_one_limit(frozen_clock) -> None:
    from imagetotext.api import ratelimit

    allowed = 0
    for n in range(300):
        if n % 2:  # another process: its own credit, the same bucket
            mine, ratelimit._credits = ratelimit._credits, {}
        allowed += take("shared", 240) == 0
        if n % 2:
            ratelimit._credits = mine
    assert allowed <= 240 + 2 * 4  # at most one batch (a second's worth) ahead per process
    assert allowed >= 240 - 2 * 4

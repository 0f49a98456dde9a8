from __future__ import annotations

import pytest
from django.test import Client

from imagetotext.api.ratelimit import take
from imagetotext.conf import Conf
from imagetotext.models import ApiKey

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

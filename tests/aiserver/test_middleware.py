"""The middleware stack stays async for the API, and WhiteNoise still serves static files."""

from __future__ import annotations

import logging

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, Client


def test_no_middleware_makes_django_adapt_the_async_stack(caplog: pytest.LogCaptureFixture, settings) -> None:
    settings.DEBUG = True  # Django says what it adapted only then
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        ASGIHandler()
    adapted = [record.getMessage() for record in caplog.records if "adapted" in record.getMessage()]
    assert adapted == []


async def test_a_static_file_is_served_on_the_async_stack() -> None:
    response = await AsyncClient().get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")  # type: ignore[attr-defined]


def test_a_static_file_is_served_on_the_sync_stack() -> None:
    response = Client().get("/static/admin/css/base.css")
    assert response.status_code == 200


@pytest.mark.django_db
async def test_other_paths_go_on_to_the_views() -> None:
    response = await AsyncClient().get("/static/no-such-file.css")
    assert response.status_code == 404
    assert (await AsyncClient().get("/accounts/login/")).status_code == 200

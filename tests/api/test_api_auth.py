"""api_view: AI Server's bearer keys, or a signed-in user, on sync and async views."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import AsyncClient, Client
from django.utils import timezone

from imagetotext.models import ApiKey

pytestmark = pytest.mark.urls("tests.auth_urls")
VIEWS = pytest.mark.parametrize("path", ["/sync", "/async"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refusal(response) -> dict[str, str]:
    status = response.json()["responseStatus"]
    return {"errorCode": status["errorCode"], "message": status["message"]}


@pytest.fixture
def issued(admin_user) -> tuple[ApiKey, str]:
    return ApiKey.issue(admin_user, "ci")


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_call_without_a_key(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert refusal(response) == {"errorCode": "Unauthorized", "message": "A valid API key is required"}


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_unknown_key(client: Client, issued: tuple[ApiKey, str], path: str) -> None:
    response = client.get(path, headers=bearer(issued[1] + "x"))

    assert response.status_code == 401
    assert refusal(response)["message"] == "A valid API key is required"


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_revoked_key(client: Client, issued: tuple[ApiKey, str], path: str) -> None:
    row, key = issued
    ApiKey.objects.filter(pk=row.pk).update(revoked_at=timezone.now())

    response = client.get(path, headers=bearer(key))

    assert response.status_code == 401
    assert refusal(response) == {"errorCode": "Unauthorized", "message": "This API key was revoked"}


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_refuses_an_expired_key(client: Client, issued: tuple[ApiKey, str], path: str) -> None:
    row, key = issued
    ApiKey.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client.get(path, headers=bearer(key))

    assert response.status_code == 401
    assert refusal(response) == {"errorCode": "Unauthorized", "message": "This API key has expired"}


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_forbids_a_key_restricted_to_other_apis(client: Client, admin_user, path: str) -> None:
    _, key = ApiKey.issue(admin_user, "queue only", restrict_to=["QueueImageToText"])

    response = client.get(path, headers=bearer(key))

    assert response.status_code == 403
    assert refusal(response) == {"errorCode": "Forbidden", "message": "This API key may not call ImageToText"}


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_hands_the_view_the_keys_owner_and_the_key(client: Client, issued: tuple[ApiKey, str], path: str) -> None:
    response = client.get(path, headers=bearer(issued[1]))

    assert response.status_code == 200
    assert response.json() == {"owner": "admin", "key": "ci"}


@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_key_restricted_to_this_api(client: Client, admin_user) -> None:
    _, key = ApiKey.issue(
        admin_user, "sync", restrict_to=["ImageToText"], expires_at=timezone.now() + timedelta(days=1)
    )

    assert client.get("/sync", headers=bearer(key)).status_code == 200


@VIEWS
@pytest.mark.django_db(transaction=True)
def test_it_accepts_a_signed_in_user_without_a_key(client: Client, admin_user, path: str) -> None:
    client.force_login(admin_user)

    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {"owner": "admin", "key": None}


@pytest.mark.django_db(transaction=True)
def test_a_wrong_key_is_refused_even_for_a_signed_in_user(client: Client, admin_user) -> None:
    client.force_login(admin_user)

    response = client.get("/sync", headers=bearer("ak-wrong"))

    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_signed_in_post_needs_the_csrf_token(admin_user) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)

    response = browser.post("/sync")

    assert response.status_code == 403
    assert refusal(response)["message"].startswith("CSRF verification failed")


@pytest.mark.django_db(transaction=True)
def test_a_post_with_a_key_needs_no_csrf_token(issued: tuple[ApiKey, str]) -> None:
    response = Client(enforce_csrf_checks=True).post("/sync", headers=bearer(issued[1]))

    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_last_use_is_recorded_at_most_once_a_minute(client: Client, issued: tuple[ApiKey, str]) -> None:
    row, key = issued
    client.get("/sync", headers=bearer(key))
    row.refresh_from_db()
    first = row.last_used_at

    client.get("/sync", headers=bearer(key))
    row.refresh_from_db()
    assert first is not None and row.last_used_at == first

    ApiKey.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get("/sync", headers=bearer(key))
    row.refresh_from_db()
    assert row.last_used_at > first


@pytest.mark.django_db(transaction=True)
async def test_the_async_view_answers_an_async_client_with_a_key(issued: tuple[ApiKey, str]) -> None:
    response = await AsyncClient().get("/async", headers=bearer(issued[1]))

    assert response.status_code == 200
    assert response.json() == {"owner": "admin", "key": "ci"}


@pytest.mark.django_db(transaction=True)
async def test_the_async_view_refuses_an_async_client_without_a_key() -> None:
    response = await AsyncClient().get("/async")

    assert response.status_code == 401
    assert refusal(response)["errorCode"] == "Unauthorized"


@pytest.mark.django_db(transaction=True)
async def test_the_async_view_accepts_a_signed_in_async_client(admin_user) -> None:
    browser = AsyncClient()
    await browser.aforce_login(admin_user)

    response = await browser.get("/async")

    assert response.json() == {"owner": "admin", "key": None}

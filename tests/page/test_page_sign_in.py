"""The pages and their socket are for signed-in users: login page, redirects, logout."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def login_settings(settings):
    settings.LOGIN_URL = "login"
    settings.LOGIN_REDIRECT_URL = "/ImageToText"
    settings.LOGOUT_REDIRECT_URL = "login"


@pytest.mark.parametrize(
    "path",
    [
        "/ImageToText",
        "/ImageToText/history",
        "/ImageToText/jobs/1",
        "/ImageToText/thumbnails/abc.webp",
    ],
)
def test_it_sends_anonymous_visitors_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_posting_anonymously_creates_nothing(client):
    response = client.post("/ImageToText/jobs", {"model": "llava:7b"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_login_page_has_labelled_fields(client):
    response = client.get("/accounts/login/?next=/ImageToText")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'name="next" value="/ImageToText"' in html


def test_signing_in_leads_to_the_page(client, api_user):
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-for-tests-only"})
    assert response.status_code == 302
    assert response["Location"] == "/ImageToText"
    assert client.get("/ImageToText").status_code == 200


def test_a_wrong_password_is_said_plainly(client, api_user):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "That username and password do not match an account." in response.content.decode()


def test_signing_out_takes_a_post(client, api_user):
    client.force_login(api_user)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/ImageToText").status_code == 302

"""A new API key in the admin is for the signed-in user unless another owner is picked."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from imagetotext.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


def selected_owner(html: str) -> str:
    select = re.search(r'<select name="owner".*?</select>', html, re.S).group(0)
    return re.search(r'<option value="(\d+)" selected>', select).group(1)


def test_the_owner_of_a_new_key_defaults_to_the_signed_in_user(signed_in: Client, admin_user, api_user) -> None:
    html = signed_in.get("/admin/imagetotext/apikey/add/").content.decode()
    assert selected_owner(html) == str(admin_user.pk)


def test_an_owner_given_in_the_url_still_wins(signed_in: Client, api_user) -> None:
    html = signed_in.get(f"/admin/imagetotext/apikey/add/?owner={api_user.pk}").content.decode()
    assert selected_owner(html) == str(api_user.pk)


def test_the_key_is_issued_to_the_owner_as_chosen(signed_in: Client, admin_user) -> None:
    response = signed_in.post(
        "/admin/imagetotext/apikey/add/", {"name": "laptop", "owner": admin_user.pk, "restrict_to": ""}, follow=True
    )
    assert response.status_code == 200
    assert ApiKey.objects.get(name="laptop").owner == admin_user

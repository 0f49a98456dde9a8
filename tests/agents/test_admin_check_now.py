""" "Check now" as a button on each agent's row and on its change page, besides the bulk action."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from agents.models import Agent, Kind

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


def test_each_row_has_a_check_now_button_posting_the_list_form_to_that_agent(signed_in: Client) -> None:
    agent = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu:11434")
    page = signed_in.get("/admin/agents/agent/").content.decode()
    button = re.search(r'<button type="submit" class="button check-now"[^>]*>Check now</button>', page).group(0)
    assert f'formaction="/admin/agents/agent/{agent.pk}/check/"' in button
    assert 'formmethod="post"' in button and 'aria-label="Check gpu now"' in button
    # Inside the list's own form, which carries the CSRF token the check needs.
    form = page[page.index('id="changelist-form"') : page.index("</form>", page.index('id="changelist-form"'))]
    assert button in form and "csrfmiddlewaretoken" in form


def test_the_rows_button_checks_that_agent_and_comes_back_to_the_list(signed_in: Client, fake_ollama) -> None:
    agent = Agent.objects.create(name="fake", kind=Kind.OLLAMA, base_url=fake_ollama.url)
    other = Agent.objects.create(name="other", kind=Kind.OLLAMA, base_url="http://127.0.0.1:9")

    response = signed_in.post(f"/admin/agents/agent/{agent.pk}/check/", {"next": "/admin/agents/agent/"})

    assert response.status_code == 302 and response["Location"] == "/admin/agents/agent/"
    agent.refresh_from_db()
    other.refresh_from_db()
    assert agent.online is True and agent.checked_at is not None
    assert other.checked_at is None  # only the agent of that row
    listing = signed_in.get("/admin/agents/agent/").content.decode()
    assert "Agent fake is online with 3 models" in listing


def test_the_change_page_has_its_own_check_now_form(signed_in: Client) -> None:
    agent = Agent.objects.create(name="gone", kind=Kind.OLLAMA, base_url="http://127.0.0.1:9", online=True)
    page = signed_in.get(f"/admin/agents/agent/{agent.pk}/change/").content.decode()
    assert f'<form method="post" action="/admin/agents/agent/{agent.pk}/check/" class="object-tool-form">' in page

    response = signed_in.post(f"/admin/agents/agent/{agent.pk}/check/", follow=True)

    agent.refresh_from_db()
    assert response.redirect_chain[-1][0] == f"/admin/agents/agent/{agent.pk}/change/"
    assert agent.online is False and "connection refused" in agent.last_error
    assert "Agent gone is offline" in response.content.decode()


def test_a_check_needs_a_post_and_a_safe_place_to_go_back_to(signed_in: Client) -> None:
    agent = Agent.objects.create(name="gone", kind=Kind.OLLAMA, base_url="http://127.0.0.1:9")
    assert signed_in.get(f"/admin/agents/agent/{agent.pk}/check/").status_code == 405
    response = signed_in.post(f"/admin/agents/agent/{agent.pk}/check/", {"next": "https://evil.example/"})
    assert response["Location"] == f"/admin/agents/agent/{agent.pk}/change/"


def test_staff_without_the_change_permission_cannot_check(client: Client, django_user_model) -> None:
    agent = Agent.objects.create(name="gone", kind=Kind.OLLAMA, base_url="http://127.0.0.1:9")
    viewer = django_user_model.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    client.force_login(viewer)
    assert client.post(f"/admin/agents/agent/{agent.pk}/check/").status_code == 403
    agent.refresh_from_db()
    assert agent.checked_at is None


def test_the_name_field_says_it_is_what_the_page_shows(signed_in: Client) -> None:
    page = signed_in.get("/admin/agents/agent/add/").content.decode()
    assert "Shown on the page beside the models it runs" in page

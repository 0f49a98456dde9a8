"""ActiveAiModels tells strangers the model names only: agent names (which carry addresses) are for staff."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def agent() -> Agent:
    # Named as `manage.py agent add` names it: from its address.
    agent = Agent.objects.create(name="Ollama 10.0.0.5:11434", kind=Kind.OLLAMA, base_url="http://10.0.0.5:11434")
    agent.mark_online(Discovery(version="1", models=[DiscoveredModel("llava:7b", Capability.VISION)]))
    return agent


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("root", "root@example.com", "pw-for-tests-only", is_staff=True)


def test_anonymous_callers_get_the_model_names_only(client: Client) -> None:
    response = client.get("/api/ActiveAiModels")

    assert response.status_code == 200
    assert response.json() == {"results": ["llava:7b"]}
    assert b"10.0.0.5" not in response.content


def test_a_key_of_a_normal_user_sees_kinds_but_no_agents(api_client: Client) -> None:
    response = api_client.get("/api/ActiveAiModels")

    assert response.status_code == 200
    assert response.json()["models"] == [
        {"name": "llava:7b", "kind": "ollama", "task": "vision", "acceptsImages": True}
    ]
    assert b"10.0.0.5" not in response.content


def test_a_signed_in_normal_user_sees_no_agents_either(user_client: Client) -> None:
    response = user_client.get("/api/ActiveAiModels")

    assert "agents" not in response.json()["models"][0]


def test_a_key_of_a_staff_user_sees_the_agents(staff_user) -> None:
    key = ApiKey.issue(staff_user, "ops")[1]

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/ActiveAiModels")

    assert response.json()["models"][0]["agents"] == ["Ollama 10.0.0.5:11434"]


def test_a_staff_session_sees_the_agents(client: Client, staff_user) -> None:
    client.force_login(staff_user)

    response = client.get("/api/ActiveAiModels?Vision=true")

    assert response.json()["models"][0]["agents"] == ["Ollama 10.0.0.5:11434"]


def test_an_unknown_key_is_refused_rather_than_read_as_anonymous() -> None:
    response = Client(HTTP_AUTHORIZATION="Bearer ak-not-a-key").get("/api/ActiveAiModels")

    assert response.status_code == 401
    assert response.json()["responseStatus"]["errorCode"] == "Unauthorized"


def test_a_revoked_staff_key_sees_nothing_more(staff_user) -> None:
    record, key = ApiKey.issue(staff_user, "old")
    record.revoked_at = timezone.now()
    record.save()

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/ActiveAiModels")

    assert response.status_code == 401
    assert b"10.0.0.5" not in response.content

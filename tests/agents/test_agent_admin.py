from __future__ import annotations

import pytest
from django.test import Client

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


def test_the_agent_list_shows_status_models_and_error(signed_in: Client) -> None:
    up = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu:11434")
    up.mark_online(
        Discovery(
            "0.12.0", [DiscoveredModel("llava:7b", Capability.VISION), DiscoveredModel("llama3.2", Capability.TEXT)]
        )
    )
    down = Agent.objects.create(name="comfy", kind=Kind.COMFYUI, base_url="http://comfy:8188")
    down.mark_offline("Cannot connect to http://comfy:8188/system_stats: connection refused")

    page = signed_in.get("/admin/agents/agent/").content.decode()

    assert 'title="online"' in page and 'title="offline"' in page
    assert "llava:7b (+1 text only)" in page
    assert "connection refused" in page


def test_check_now_marks_an_unreachable_agent_offline_with_the_reason(signed_in: Client) -> None:
    agent = Agent.objects.create(name="gone", kind=Kind.OLLAMA, base_url="http://127.0.0.1:9", online=True)

    response = signed_in.post(
        "/admin/agents/agent/", {"action": "check_now", "_selected_action": [agent.pk]}, follow=True
    )

    agent.refresh_from_db()
    assert response.status_code == 200
    assert agent.online is False
    assert "connection refused" in agent.last_error
    assert "Agent gone is offline" in response.content.decode()


def test_check_now_brings_a_fake_ollama_online_with_its_models(signed_in: Client, fake_ollama) -> None:
    agent = Agent.objects.create(name="fake", kind=Kind.OLLAMA, base_url=fake_ollama.url)

    response = signed_in.post(
        "/admin/agents/agent/", {"action": "check_now", "_selected_action": [agent.pk]}, follow=True
    )

    agent.refresh_from_db()
    assert agent.online is True
    assert "Agent fake is online with 3 models" in response.content.decode()


def test_adding_an_agent_in_the_admin_checks_it_at_once(signed_in: Client, fake_ollama) -> None:
    response = signed_in.post(
        "/admin/agents/agent/add/",
        {
            "name": "new",
            "kind": "ollama",
            "base_url": fake_ollama.url,
            "enabled": "on",
            "priority": "0",
            "concurrency": "2",
            "connect_timeout": "10",
            "first_byte_timeout": "120",
            "idle_timeout": "60",
            "api_key": "",
            "api_key_header": "",
            "models-TOTAL_FORMS": "0",
            "models-INITIAL_FORMS": "0",
        },
        follow=True,
    )

    assert response.status_code == 200
    agent = Agent.objects.get(name="new")
    assert agent.online is True
    assert agent.concurrency == 2
    assert set(agent.models.values_list("name", flat=True)) >= {"llava:7b"}

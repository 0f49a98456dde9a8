from __future__ import annotations

import pytest

from agents.health import check_agent, check_all_agents
from agents.models import Agent, Capability, Kind

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(fake_ollama) -> Agent:
    return Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url=fake_ollama.url)


def test_a_check_lists_vision_models_as_usable_and_text_models_as_text_only(agent: Agent) -> None:
    assert check_agent(agent) is True

    agent.refresh_from_db()
    tasks = dict(agent.models.values_list("name", "capability"))
    assert agent.online is True
    assert agent.version == "0.12.0"
    assert tasks == {"llava:7b": Capability.VISION, "gemma3:4b": Capability.VISION, "llama3.2:3b": Capability.TEXT}


def test_discovery_asks_show_for_every_listed_model(agent: Agent, fake_ollama) -> None:
    check_agent(agent)

    shown = [r.json["model"] for r in fake_ollama.requests if r.path == "/api/show"]
    assert sorted(shown) == ["gemma3:4b", "llama3.2:3b", "llava:7b"]


def test_discovery_keeps_what_show_said_about_the_model(agent: Agent) -> None:
    check_agent(agent)

    llava = agent.models.get(name="llava:7b")
    assert "vision" in llava.details["capabilities"]
    assert llava.details["family"]


def test_an_unreachable_agent_is_marked_offline_with_the_reason(agent: Agent, fake_ollama) -> None:
    fake_ollama.mode = "refuse"

    assert check_agent(agent) is False

    agent.refresh_from_db()
    assert agent.online is False
    assert agent.checked_at is not None
    assert "connection refused" in agent.last_error


def test_a_server_error_marks_the_agent_offline_with_the_backend_message(agent: Agent, fake_ollama) -> None:
    fake_ollama.mode = "500"

    check_agent(agent)

    agent.refresh_from_db()
    assert agent.online is False
    assert "answered 500" in agent.last_error


def test_a_hanging_agent_times_out_instead_of_blocking(agent: Agent, fake_ollama, settings) -> None:
    settings.AGENT_CHECK_TIMEOUT = 1
    fake_ollama.mode = "hang"

    check_agent(agent)

    agent.refresh_from_db()
    assert agent.online is False
    assert "within 1 s" in agent.last_error


def test_an_offline_agent_comes_back_by_itself_at_the_next_check(agent: Agent, fake_ollama) -> None:
    fake_ollama.mode = "refuse"
    check_all_agents()
    agent.refresh_from_db()
    assert agent.online is False
    assert agent.models.count() == 0

    fake_ollama.mode = "ok"
    check_all_agents()

    agent.refresh_from_db()
    assert agent.online is True
    assert agent.last_error == ""
    assert agent.models.count() == 3


def test_models_that_disappear_from_the_agent_are_dropped(agent: Agent, fake_ollama) -> None:
    check_agent(agent)
    fake_ollama.models = [m for m in fake_ollama.models if m.name != "gemma3:4b"]

    check_agent(agent)

    assert sorted(agent.models.values_list("name", flat=True)) == ["llama3.2:3b", "llava:7b"]


def test_the_api_key_is_sent_as_a_bearer_token(agent: Agent, fake_ollama) -> None:
    agent.api_key = "sk-123"
    agent.save()

    check_agent(agent)

    assert fake_ollama.requests[0].headers["Authorization"] == "Bearer sk-123"


def test_the_api_key_goes_in_the_named_header_when_one_is_set(agent: Agent, fake_ollama) -> None:
    agent.api_key, agent.api_key_header = "sk-123", "X-Api-Key"
    agent.save()

    check_agent(agent)

    assert fake_ollama.requests[0].headers["X-Api-Key"] == "sk-123"
    assert "Authorization" not in fake_ollama.requests[0].headers


def test_disabled_agents_are_not_checked_by_the_schedule(agent: Agent, fake_ollama) -> None:
    agent.enabled = False
    agent.save()

    assert check_all_agents() == {}
    assert fake_ollama.requests == []

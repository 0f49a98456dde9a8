from __future__ import annotations

import pytest
from django.test import Client

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind

pytestmark = pytest.mark.django_db


def agent_with(name: str, kind: str, models: list[tuple[str, str]], online: bool = True, **fields: object) -> Agent:
    agent = Agent.objects.create(name=name, kind=kind, base_url=f"http://{name}:1", **fields)
    agent.mark_online(Discovery(version="1", models=[DiscoveredModel(n, t) for n, t in models]))
    if not online:
        agent.mark_offline("Cannot connect: connection refused")
    return agent


@pytest.fixture
def staff_client(client: Client, django_user_model) -> Client:
    """Only staff see which agents offer a model (anonymous callers get the names only)."""
    client.force_login(django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True))
    return client


@pytest.fixture
def agents() -> None:
    agent_with("gpu", Kind.OLLAMA, [("llava:7b", Capability.VISION), ("llama3.2:3b", Capability.TEXT)])
    agent_with("comfy", Kind.COMFYUI, [("microsoft/Florence-2-base", Capability.FLORENCE2)])
    agent_with("down", Kind.OLLAMA, [("gemma3:4b", Capability.VISION)], online=False)
    agent_with("off", Kind.OLLAMA, [("qwen2.5vl:7b", Capability.VISION)], enabled=False)


def test_it_lists_models_of_enabled_online_agents_only(client: Client, agents: None) -> None:
    response = client.get("/api/ActiveAiModels")
    assert response.status_code == 200
    assert response.json()["results"] == ["llama3.2:3b", "llava:7b", "microsoft/Florence-2-base"]


def test_vision_true_leaves_out_text_only_models(client: Client, agents: None) -> None:
    response = client.get("/api/ActiveAiModels?Vision=true")
    assert response.json()["results"] == ["llava:7b", "microsoft/Florence-2-base"]


def test_query_keys_are_case_insensitive(client: Client, agents: None) -> None:
    response = client.get("/api/ActiveAiModels?vision=TRUE")
    assert response.json()["results"] == ["llava:7b", "microsoft/Florence-2-base"]


def test_each_entry_names_its_agent_kind_for_grouping(staff_client: Client, agents: None) -> None:
    entries = {e["name"]: e for e in staff_client.get("/api/ActiveAiModels?Vision=true").json()["models"]}
    assert entries["llava:7b"]["kind"] == "ollama"
    assert entries["microsoft/Florence-2-base"]["kind"] == "comfyui"
    assert entries["microsoft/Florence-2-base"]["task"] == "florence2"
    assert entries["llava:7b"]["agents"] == ["gpu"]


def test_a_model_on_two_agents_is_listed_once_with_both(staff_client: Client, agents: None) -> None:
    agent_with("gpu2", Kind.OLLAMA, [("llava:7b", Capability.VISION)], priority=5)
    entries = staff_client.get("/api/ActiveAiModels?Vision=true").json()["models"]
    llava = [e for e in entries if e["name"] == "llava:7b"]
    assert len(llava) == 1
    assert llava[0]["agents"] == ["gpu2", "gpu"]


def test_provider_filters_by_kind_with_ai_servers_name_too(client: Client, agents: None) -> None:
    assert client.get("/api/ActiveAiModels?Provider=OllamaAiProvider&Vision=true").json()["results"] == ["llava:7b"]
    assert client.get("/api/ActiveAiModels?provider=comfyui").json()["results"] == ["microsoft/Florence-2-base"]


def test_a_bad_vision_value_is_a_400_with_response_status(client: Client, agents: None) -> None:
    response = client.get("/api/ActiveAiModels?Vision=perhaps")
    assert response.status_code == 400
    status = response.json()["responseStatus"]
    assert status["message"] == "Vision must be true or false"
    assert status["errors"][0]["fieldName"] == "Vision"


def test_an_agent_coming_back_online_brings_its_models_back(client: Client) -> None:
    agent = agent_with("flaky", Kind.OLLAMA, [("llava:7b", Capability.VISION)], online=False)
    assert client.get("/api/ActiveAiModels").json()["results"] == []
    agent.mark_online(Discovery(version="1", models=[DiscoveredModel("llava:7b", Capability.VISION)]))
    assert client.get("/api/ActiveAiModels").json()["results"] == ["llava:7b"]


def test_it_only_allows_get(client: Client) -> None:
    assert client.post("/api/ActiveAiModels").status_code == 405


def test_a_wrong_method_is_a_405_with_response_status(client: Client) -> None:
    response = client.post("/api/ActiveAiModels")

    assert response["Allow"] == "GET"
    assert response.json()["responseStatus"]["errorCode"] == "NotSupportedException"

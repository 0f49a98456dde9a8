from __future__ import annotations

import pytest

from agents.health import check_agent
from agents.models import Agent, Capability, Kind

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def agent(fake_comfyui) -> Agent:
    return Agent.objects.create(name="comfy", kind=Kind.COMFYUI, base_url=fake_comfyui.url)


def test_a_check_lists_the_florence_models_with_their_tasks(agent: Agent) -> None:
    assert check_agent(agent) is True

    agent.refresh_from_db()
    base = agent.models.get(name="microsoft/Florence-2-base")
    assert agent.online is True
    assert agent.version
    assert base.capability == Capability.FLORENCE2
    assert {"caption", "detailed_caption", "more_detailed_caption", "ocr"} <= set(base.details["tasks"])
    assert agent.models.filter(capability=Capability.FLORENCE2).count() == 14


def test_models_already_on_the_server_are_marked_installed(agent: Agent) -> None:
    check_agent(agent)

    installed = set(agent.models.filter(details__installed=True).values_list("name", flat=True))
    assert "microsoft/Florence-2-base" in installed
    assert "microsoft/Florence-2-large" not in installed


def test_discovery_asks_for_system_stats_and_the_florence_nodes(agent: Agent, fake_comfyui) -> None:
    check_agent(agent)

    paths = {r.path for r in fake_comfyui.requests}
    assert {"/system_stats", "/object_info/Florence2Run", "/object_info/DownloadAndLoadFlorence2Model"} <= paths


def test_a_comfyui_without_florence_is_online_but_offers_nothing_and_says_why(agent: Agent, fake_comfyui) -> None:
    fake_comfyui.florence_installed = False

    check_agent(agent)

    agent.refresh_from_db()
    assert agent.online is True
    assert agent.models.count() == 0
    assert "ComfyUI-Florence2" in agent.last_error


def test_an_unreachable_comfyui_is_offline_with_the_reason(agent: Agent, fake_comfyui) -> None:
    fake_comfyui.mode = "refuse"

    check_agent(agent)

    agent.refresh_from_db()
    assert agent.online is False
    assert "connection refused" in agent.last_error

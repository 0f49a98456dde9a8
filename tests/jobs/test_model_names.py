"""Which agent's model a request's model name means (jobs.resolve_model and usable_model)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, AgentModel, Capability
from imagetotext import jobs
from imagetotext.errors import Refusal

pytestmark = pytest.mark.django_db


def agent(name: str, *models: tuple[str, str], online: bool = True, enabled: bool = True, priority: int = 0) -> Agent:
    made = Agent.objects.create(
        name=name, kind="ollama", base_url=f"http://{name}.invalid", online=online, enabled=enabled, priority=priority
    )
    for model, capability in models:
        AgentModel.objects.create(agent=made, name=model, capability=capability)
    return made


def resolved(name: str) -> tuple[str, str]:
    model = jobs.resolve_model(name)
    return model.name, model.agent.name


def test_an_exact_name_then_latest_then_a_short_name_after_a_slash() -> None:
    agent(
        "a",
        ("llava:latest", Capability.VISION),
        ("llava", Capability.VISION),
        ("microsoft/Florence-2-base", Capability.FLORENCE2),
    )

    assert resolved("llava") == ("llava", "a")
    assert resolved("llava:latest") == ("llava:latest", "a")
    assert resolved("Florence-2-base") == ("microsoft/Florence-2-base", "a")


def test_the_model_of_an_enabled_online_agent_of_higher_priority_comes_first() -> None:
    agent("off", ("llava:7b", Capability.VISION), online=False, priority=9)
    agent("low", ("llava:7b", Capability.VISION), priority=1)
    agent("high", ("llava:7b", Capability.VISION), priority=5)

    assert resolved("llava:7b") == ("llava:7b", "high")


def test_like_wildcards_in_a_name_match_only_themselves() -> None:
    agent("a", ("org/a_b", Capability.VISION), ("org/aXb", Capability.VISION), ("org/100%", Capability.VISION))

    assert resolved("a_b") == ("org/a_b", "a")
    assert resolved("100%") == ("org/100%", "a")
    with pytest.raises(Refusal) as refused:
        jobs.resolve_model("a%b")
    assert refused.value.status == 404


def test_a_short_name_matches_case_as_written() -> None:
    agent("a", ("microsoft/Florence-2-base", Capability.FLORENCE2))

    with pytest.raises(Refusal) as refused:
        jobs.resolve_model("florence-2-base")
    assert refused.value.status == 404


def test_a_text_only_model_is_a_400_and_an_unknown_one_a_404() -> None:
    agent("a", ("mistral", Capability.TEXT))

    with pytest.raises(Refusal) as text_only:
        jobs.resolve_model("mistral")
    with pytest.raises(Refusal) as unknown:
        jobs.resolve_model("nothing")
    assert (text_only.value.status, unknown.value.status) == (400, 404)


def test_usable_needs_an_enabled_online_agent_with_that_very_name(monkeypatch) -> None:
    monkeypatch.setattr(jobs.Conf, "MODEL_LOOKUP_SECONDS", 0.0)
    agent("off", ("llava:7b", Capability.VISION), online=False)
    agent("disabled", ("llava:7b", Capability.VISION), enabled=False)
    agent("other", ("llava:13b", Capability.VISION))

    with pytest.raises(Refusal) as refused:
        jobs.usable_model("llava:7b")
    assert refused.value.status == 405

    agent("on", ("llava:7b", Capability.VISION))
    assert jobs.usable_model("llava:7b").agent.name == "on"


def test_a_lookup_not_kept_costs_one_statement(monkeypatch) -> None:
    monkeypatch.setattr(jobs.Conf, "MODEL_LOOKUP_SECONDS", 0.0)
    agent("a", ("llava:7b", Capability.VISION))

    with CaptureQueriesContext(connection) as queries:
        assert jobs.usable_model("llava:7b").name == "llava:7b"
    assert len(queries) == 1

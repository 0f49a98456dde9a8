from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent, Kind, Source

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command("agent", *args, stdout=out)
    return out.getvalue()


def test_add_registers_the_agent_and_checks_it(fake_ollama) -> None:
    output = run("add", "ollama", fake_ollama.url + "/", "--name", "gpu", "--priority", "2", "--concurrency", "3")

    agent = Agent.objects.get(name="gpu")
    assert (agent.base_url, agent.priority, agent.concurrency, agent.source) == (fake_ollama.url, 2, 3, Source.COMMAND)
    assert agent.online is True
    assert "Added gpu" in output and "online" in output and "llava:7b" in output


def test_adding_the_same_url_twice_keeps_one_agent(fake_ollama) -> None:
    run("add", "ollama", fake_ollama.url, "--no-check")
    output = run("add", "ollama", fake_ollama.url, "--no-check")

    assert Agent.objects.count() == 1
    assert "Already registered" in output


def test_add_refuses_a_url_that_is_not_one() -> None:
    with pytest.raises(CommandError, match="base_url"):
        run("add", "ollama", "not a url", "--no-check")
    assert Agent.objects.count() == 0


def test_list_shows_status_models_and_errors(fake_ollama) -> None:
    run("add", "ollama", fake_ollama.url, "--name", "gpu")
    Agent.objects.create(name="gone", kind=Kind.COMFYUI, base_url="http://127.0.0.1:9")
    run("check", "gone")

    output = run("list")

    assert "gpu  ollama" in output and "online" in output
    assert "llama3.2:3b (text only)" in output
    assert "gone  comfyui  http://127.0.0.1:9  offline" in output
    assert "error: Cannot connect" in output


def test_list_says_how_to_add_an_agent_when_there_is_none() -> None:
    assert "manage.py agent add" in run("list")


def test_remove_deletes_by_name_or_id() -> None:
    first = Agent.objects.create(name="a", kind=Kind.OLLAMA, base_url="http://a:1")
    Agent.objects.create(name="b", kind=Kind.OLLAMA, base_url="http://b:1")

    run("remove", str(first.pk), "b")

    assert Agent.objects.count() == 0


def test_remove_of_an_unknown_agent_changes_nothing() -> None:
    Agent.objects.create(name="a", kind=Kind.OLLAMA, base_url="http://a:1")
    with pytest.raises(CommandError, match="No agent named 'zzz'"):
        run("remove", "a", "zzz")
    assert Agent.objects.count() == 1


def test_sync_registers_agents_from_the_environment_once(settings, fake_ollama, fake_comfyui) -> None:
    settings.OLLAMA_URLS = [fake_ollama.url]
    settings.COMFYUI_URLS = [fake_comfyui.url]
    settings.LOCAL_AGENT = False

    run("sync")
    output = run("sync")

    assert Agent.objects.count() == 2
    assert set(Agent.objects.values_list("source", flat=True)) == {Source.ENVIRONMENT}
    assert Agent.objects.filter(online=True).count() == 2
    assert "Registered at start" in output


def test_environment_agents_get_readable_unique_names(settings) -> None:
    Agent.objects.create(name="Ollama gpu:11434", kind=Kind.OLLAMA, base_url="http://other:1")
    settings.OLLAMA_URLS = ["http://gpu:11434"]
    settings.COMFYUI_URLS = []
    settings.LOCAL_AGENT = False

    from agents.registration import register_from_environment

    [agent] = register_from_environment()
    assert agent.name == "Ollama gpu:11434 (2)"

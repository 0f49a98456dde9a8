"""Adding and removing agents, from the command line or the environment."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from agents.models import Agent, Kind, Source

LOCAL_AGENT_NAME = "Built-in OCR"


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def default_name(kind: str, base_url: str) -> str:
    """A readable name such as 'Ollama 10.0.0.5:11434'."""
    return f"{Kind(kind).label.split(' ')[0]} {urlsplit(base_url).netloc}"


def unique_name(name: str) -> str:
    candidate, n = name, 2
    while Agent.objects.filter(name=candidate).exists():
        candidate, n = f"{name} ({n})", n + 1
    return candidate


@transaction.atomic
def register(kind: str, base_url: str, *, source: str, name: str = "", **fields: object) -> tuple[Agent, bool]:
    """The agent of this kind at this URL, created if it is not there yet."""
    base_url = normalise_url(base_url)
    existing = Agent.objects.filter(kind=kind, base_url=base_url).first()
    if existing:
        return existing, False
    agent = Agent.objects.create(
        kind=kind,
        base_url=base_url,
        name=unique_name(name or default_name(kind, base_url)),
        source=source,
        **fields,
    )
    return agent, True


def register_from_environment() -> list[Agent]:
    """The built-in agent and those named by OLLAMA_URLS and COMFYUI_URLS; safe at every start."""
    wanted = [(Kind.OLLAMA, url) for url in settings.OLLAMA_URLS]
    wanted += [(Kind.COMFYUI, url) for url in settings.COMFYUI_URLS]
    agents = [register(kind, url, source=Source.ENVIRONMENT)[0] for kind, url in wanted]
    local = register_local_agent()
    return [local, *agents] if local else agents


def register_local_agent() -> Agent | None:
    """The built-in OCR agent when LOCAL_AGENT is on; switched off (not deleted) otherwise."""
    existing = Agent.objects.filter(kind=Kind.LOCAL, source=Source.BUILT_IN)
    if not settings.LOCAL_AGENT:
        existing.update(enabled=False)
        return None
    # Each worker process runs one job at a time, so that is how many OCR jobs can run.
    workers = settings.WORKERS
    agent, _ = Agent.objects.get_or_create(
        kind=Kind.LOCAL, source=Source.BUILT_IN, defaults={"name": unique_name(LOCAL_AGENT_NAME)}
    )
    if (agent.enabled, agent.concurrency) != (True, workers):
        agent.enabled, agent.concurrency = True, workers
        agent.save(update_fields=["enabled", "concurrency"])
    return agent

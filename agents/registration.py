"""Adding and removing agents, from the command line or the environment."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from agents.models import Agent, Kind, Source


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
    """Agents named by OLLAMA_URLS and COMFYUI_URLS; safe to call at every start."""
    wanted = [(Kind.OLLAMA, url) for url in settings.OLLAMA_URLS]
    wanted += [(Kind.COMFYUI, url) for url in settings.COMFYUI_URLS]
    return [register(kind, url, source=Source.ENVIRONMENT)[0] for kind, url in wanted]

"""GET /api/ActiveAiModels: the models that can take work right now."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from agents.models import AgentModel, AgentModelQuerySet, Capability, Kind
from aiserver.env import parse_bool
from imagetotext.api.wire import error_response, methods, query_value

# AI Server's provider names, so its clients can filter the way they always have.
PROVIDER_ALIASES = {"ollamaaiprovider": Kind.OLLAMA, "comfy": Kind.COMFYUI}


@methods("GET")
def active_ai_models(request: HttpRequest) -> JsonResponse:
    models = AgentModel.objects.usable().select_related("agent")
    vision = query_value(request, "Vision")
    if vision:
        wanted = parse_bool(vision)
        if wanted is None:
            return error_response(400, "Vision must be true or false", field="Vision")
        models = models.accepting_images() if wanted else models.filter(capability=Capability.TEXT)
    provider = query_value(request, "Provider")
    if provider:
        kind = PROVIDER_ALIASES.get(provider.lower(), provider.lower())
        if kind not in Kind.values:
            return error_response(400, f"Unknown provider {provider!r}", field="Provider")
        models = models.filter(agent__kind=kind)
    entries = summarise(models)
    return JsonResponse({"results": [e["name"] for e in entries], "models": entries})


def summarise(models: AgentModelQuerySet) -> list[dict[str, Any]]:
    """One entry per model name, naming every agent that offers it."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for model in models.order_by("name", "-agent__priority"):
        key = (model.name, model.agent.kind)
        entry = entries.setdefault(
            key,
            {
                "name": model.name,
                "kind": model.agent.kind,
                "task": model.capability,
                "acceptsImages": model.accepts_images,
                "agents": [],
            },
        )
        entry["agents"].append(model.agent.name)
    return list(entries.values())

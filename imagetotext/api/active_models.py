"""GET /api/ActiveAiModels: the models that can take work right now.

Open to anyone, as in AI Server, which answers with model names only; so do we to anonymous
callers. A key or a signed-in user also sees each model's kind and task, and staff the agents
that offer it (their names often carry the address: "Ollama 10.0.0.5:11434").
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agents.models import AgentModel, AgentModelQuerySet, Capability, Kind
from aiserver.env import parse_bool
from imagetotext.api.auth import authenticate, bearer_token
from imagetotext.api.wire import error_response, methods, query_value

# AI Server's provider names, so its clients can filter the way they always have.
PROVIDER_ALIASES = {"ollamaaiprovider": Kind.OLLAMA, "comfy": Kind.COMFYUI}


@csrf_exempt  # GET only: a POST from elsewhere gets the 405, not a CSRF page
@methods("GET")
def active_ai_models(request: HttpRequest) -> HttpResponse:
    refusal = identify(request)
    if refusal is not None:
        return refusal
    caller = getattr(request, "owner", None)
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
    entries = summarise(models, with_agents=caller is not None and caller.is_staff)
    if caller is None:
        return JsonResponse({"results": [e["name"] for e in entries]})
    return JsonResponse({"results": [e["name"] for e in entries], "models": entries})


def identify(request: HttpRequest) -> HttpResponse | None:
    """Check a caller who sends a key or has a session (setting request.owner); anonymous ones pass."""
    if bearer_token(request) is None and not request.user.is_authenticated:
        return None
    return authenticate(request, "ActiveAiModels")


def summarise(models: AgentModelQuerySet, with_agents: bool) -> list[dict[str, Any]]:
    """One entry per model name, naming every agent that offers it when asked to."""
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
            },
        )
        if with_agents:
            entry.setdefault("agents", []).append(model.agent.name)
    return list(entries.values())

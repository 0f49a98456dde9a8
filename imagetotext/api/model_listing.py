"""The models this server runs, as Ollama lists them (/api/tags, /api/show, /api/ps) and OpenAI (/v1/models).

Both list the models of enabled, online agents that take images, one entry per name however
many agents offer it (protocols.md A.4). Ollama models carry what discovery learned of them;
Florence-2 and the built-in OCR get details of the same shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from agents.models import AgentModel, Kind
from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.ollama_compat import ollama_error, with_error_member
from imagetotext.api.openai_wire import openai_error, with_openai_errors
from imagetotext.api.wire import json_body, lower_keys, methods, text_field
from imagetotext.db_threads import arun
from imagetotext.errors import Refusal
from imagetotext.models import Job, State

# The Ollama API version this server speaks: the routes and shapes of protocols.md A.2-A.4.
OLLAMA_API_VERSION = "0.12.0"
# Ollama keeps an idle model loaded for five minutes; /api/ps says when that would end.
KEEP_ALIVE = timedelta(minutes=5)
# Every model listed here reads images; only Ollama's discovery knows more.
IMAGE_CAPABILITIES = ["completion", "vision"]
DETAIL_KEYS = ("format", "family", "parameter_size", "quantization_level")
# What the models of the other kinds are, in Ollama's terms. The Florence-2 graph runs in fp16.
KIND_DETAILS: dict[str, dict[str, str]] = {
    Kind.COMFYUI: {"format": "comfyui", "family": "florence2", "quantization_level": "F16"},
    Kind.LOCAL: {"format": "onnx", "family": "ocr"},
}
# Florence-2 comes in two sizes (0.23B and 0.77B parameters); fine-tunes keep the size in their names.
FLORENCE_SIZES = (("large", "0.77B"), ("base", "0.23B"))


@dataclass(frozen=True)
class ListedModel:
    """A model as the listings show it: its name, the kind of agent that runs it, what discovery stored."""

    name: str
    kind: str
    stored: dict[str, Any]
    modified: datetime  # when its agent's discovery last saw it; Ollama's own date is not kept

    @classmethod
    def of(cls, row: AgentModel) -> ListedModel:
        stored = row.details if isinstance(row.details, dict) else {}
        return cls(row.name, row.agent.kind, stored, row.updated_at)

    def text(self, key: str) -> str:
        value = self.stored.get(key)
        return value if isinstance(value, str) else ""

    @property
    def digest(self) -> str:
        """The stored digest, or a stable one made from the name."""
        return self.text("digest") or hashlib.sha256(self.name.encode()).hexdigest()

    @property
    def size(self) -> int:
        size = self.stored.get("size")
        return size if isinstance(size, int) and not isinstance(size, bool) else 0

    @property
    def capabilities(self) -> list[str]:
        stored = self.stored.get("capabilities")
        if isinstance(stored, list) and stored and all(isinstance(c, str) for c in stored):
            return list(stored)
        return list(IMAGE_CAPABILITIES)

    def details(self) -> dict[str, Any]:
        """Ollama's details object: the stored values, else those of the model's kind."""
        values = {key: "" for key in DETAIL_KEYS} | KIND_DETAILS.get(self.kind, {})
        if self.kind == Kind.COMFYUI:
            values["parameter_size"] = florence_size(self.name)
        values |= {key: self.text(key) for key in DETAIL_KEYS if self.text(key)}
        family = values["family"]
        return {
            "parent_model": "",
            "format": values["format"],
            "family": family,
            "families": [family] if family else [],
            "parameter_size": values["parameter_size"],
            "quantization_level": values["quantization_level"],
        }


def florence_size(name: str) -> str:
    lowered = name.lower()
    return next((size for word, size in FLORENCE_SIZES if word in lowered), "")


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- which models ---------------------------------------------------------------


def listed_models() -> list[ListedModel]:
    """One entry per model name that an enabled, online agent runs for images (the highest priority's row)."""
    rows = AgentModel.objects.usable().accepting_images().select_related("agent")
    return first_per_name(rows.order_by("name", "-agent__priority", "agent__name"))


def first_per_name(rows: Any) -> list[ListedModel]:
    seen: dict[str, ListedModel] = {}
    for row in rows:
        seen.setdefault(row.name, ListedModel.of(row))
    return list(seen.values())


def find_listed(requested: str) -> ListedModel | None:
    """The listed model a request names, matched as jobs.resolve_model does: exact, ':latest', Florence short name."""
    models = {model.name: model for model in listed_models()}
    for name in (requested, f"{requested}:latest"):
        if name in models:
            return models[name]
    return next((model for name, model in models.items() if name.endswith("/" + requested)), None)


def running_models() -> list[ListedModel]:
    """The models of the jobs running now; one whose agent has gone since is still shown, by name."""
    names = set(Job.objects.filter(state=State.STARTED).values_list("model", flat=True))
    rows = AgentModel.objects.filter(name__in=names).select_related("agent")
    known = first_per_name(rows.order_by("name", "-agent__online", "-agent__priority", "agent__name"))
    now = timezone.now()
    gone = [ListedModel(name, "", {}, now) for name in names - {model.name for model in known}]
    return sorted(known + gone, key=lambda model: model.name)


# --- Ollama's shapes ------------------------------------------------------------


def tags_entry(model: ListedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": stamp(model.modified),
        "size": model.size,
        "digest": model.digest,
        "details": model.details(),
        "capabilities": model.capabilities,
    }


def show_body(model: ListedModel) -> dict[str, Any]:
    details = model.details()
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": details,
        "model_info": {"general.architecture": details["family"]} if details["family"] else {},
        "capabilities": model.capabilities,
        "modified_at": stamp(model.modified),
    }


def ps_entry(model: ListedModel, expires_at: datetime) -> dict[str, Any]:
    return {
        "name": model.name,
        "model": model.name,
        "size": model.size,
        "digest": model.digest,
        "details": model.details(),
        "expires_at": stamp(expires_at),
        "size_vram": 0,
    }


def openai_model(model: ListedModel) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": int(model.modified.timestamp()), "owned_by": model.kind}


# --- views ----------------------------------------------------------------------


@csrf_exempt
@with_error_member
@methods("GET", "HEAD")
@api_view("OllamaTags")
async def tags(request: ApiRequest) -> JsonResponse:
    """GET /api/tags: the models this server runs for images, in Ollama's list shape."""
    models = await arun(listed_models)
    return JsonResponse({"models": [tags_entry(model) for model in models]})


@csrf_exempt
@with_error_member
@methods("POST")
@api_view("OllamaTags")
async def show(request: ApiRequest) -> JsonResponse:
    """POST /api/show {"model": ...} (or the legacy "name"): one listed model's details and capabilities."""
    try:
        model = await arun(shown_model, request)
    except Refusal as refusal:
        return ollama_error(refusal)
    return JsonResponse(show_body(model))


def shown_model(request: HttpRequest) -> ListedModel:
    fields = lower_keys(json_body(request))
    name = text_field(fields, "model", 200) or text_field(fields, "name", 200)
    if not name:
        raise Refusal("model is required", field="model")
    model = find_listed(name)
    if model is None:
        raise Refusal(f"model '{name}' not found", 404, "NotFound", "model")
    return model


@csrf_exempt
@with_error_member
@methods("GET")
@api_view("OllamaTags")
async def ps(request: ApiRequest) -> JsonResponse:
    """GET /api/ps: the models running jobs now."""
    models = await arun(running_models)
    expires_at = timezone.now() + KEEP_ALIVE
    return JsonResponse({"models": [ps_entry(model, expires_at) for model in models]})


@csrf_exempt  # no key: Ollama clients call it to see whether the server is up
@with_error_member
@methods("GET", "HEAD")
async def version(request: HttpRequest) -> JsonResponse:
    """GET /api/version: the Ollama API version this server speaks."""
    return JsonResponse({"version": OLLAMA_API_VERSION})


@csrf_exempt
@with_openai_errors
@methods("GET")
@api_view("OpenAiModels")
async def openai_models(request: ApiRequest) -> JsonResponse:
    """GET /v1/models: the same models, in OpenAI's list shape."""
    models = await arun(listed_models)
    return JsonResponse({"object": "list", "data": [openai_model(model) for model in models]})


@csrf_exempt
@with_openai_errors
@methods("GET")
@api_view("OpenAiModels")
async def openai_model_detail(request: ApiRequest, model: str) -> JsonResponse:
    """GET /v1/models/<model>: one listed model, or OpenAI's 404."""
    found = await arun(find_listed, model)
    if found is None:
        return openai_error(404, f"The model '{model}' does not exist", "model_not_found")
    return JsonResponse(openai_model(found))

"""Ollama agents: discovery through /api/tags and /api/show."""

from __future__ import annotations

from typing import Any

from agents.base import AgentClient, AgentError
from agents.models import DiscoveredModel, Discovery, Kind, Task

DETAIL_KEYS = ("family", "parameter_size", "quantization_level", "format")


class OllamaClient(AgentClient):
    kind = Kind.OLLAMA

    def discover(self) -> Discovery:
        version = self.version()
        listed = self.request_json("GET", "/api/tags").get("models") or []
        models, skipped = [], []
        for entry in listed:
            name = entry.get("model") or entry.get("name")
            try:
                models.append(self.describe(name, entry))
            except AgentError as error:
                # A model deleted between the two calls is not the agent's fault.
                skipped.append(f"{name}: {error}")
        note = "Skipped " + "; ".join(skipped) if skipped else ""
        return Discovery(version=version, models=models, note=note)

    def version(self) -> str:
        try:
            return str(self.request_json("GET", "/api/version").get("version", ""))
        except AgentError as error:
            if "answered 404" in str(error):
                return ""
            raise

    def describe(self, name: str, listed: dict[str, Any]) -> DiscoveredModel:
        """Ask /api/show what the model can do; only vision models take images."""
        shown = self.request_json("POST", "/api/show", {"model": name})
        capabilities = list(shown.get("capabilities") or [])
        source = shown.get("details") or listed.get("details") or {}
        details: dict[str, Any] = {key: source[key] for key in DETAIL_KEYS if source.get(key)}
        details["capabilities"] = capabilities
        if listed.get("size"):
            details["size"] = listed["size"]
        task = Task.VISION if "vision" in capabilities else Task.TEXT
        return DiscoveredModel(name=name, task=task, details=details)

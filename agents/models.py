"""Agents are the backends that turn images into text, and the models they offer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.utils import timezone


class Kind(models.TextChoices):
    OLLAMA = "ollama", "Ollama"
    COMFYUI = "comfyui", "ComfyUI (Florence-2)"
    LOCAL = "local", "Built-in (local)"


class Capability(models.TextChoices):
    """What a model does with an image: chat about it, run Florence-2 tasks, read its text; or nothing."""

    VISION = "vision", "Vision chat"
    TEXT = "text", "Text only (not offered for images)"
    FLORENCE2 = "florence2", "Florence-2 tasks"
    OCR = "ocr", "Text recognition (OCR)"


class Source(models.TextChoices):
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Management command"
    ENVIRONMENT = "env", "Environment variable"
    BUILT_IN = "builtin", "Built in"


@dataclass(frozen=True)
class DiscoveredModel:
    """A model as discovery found it on an agent."""

    name: str
    capability: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Discovery:
    """What a successful check learned about an agent."""

    version: str
    models: list[DiscoveredModel]
    note: str = ""


class AgentQuerySet(models.QuerySet["Agent"]):
    def usable(self) -> AgentQuerySet:
        return self.filter(enabled=True, online=True)


class Agent(models.Model):
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    base_url = models.URLField(
        "base URL", blank=True, help_text="For example http://127.0.0.1:11434. Empty for built-in agents."
    )
    api_key = models.CharField("API key", max_length=500, blank=True)
    api_key_header = models.CharField(
        "API key header",
        max_length=100,
        blank=True,
        help_text="Send the key in this header instead of Authorization: Bearer.",
    )
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=0, help_text="Higher wins when agents are equally busy.")
    concurrency = models.PositiveSmallIntegerField(default=1, help_text="How many jobs it may run at once.")
    # A hung backend is left for another agent within about two minutes (connect, then first byte),
    # while a cold model load, which sends nothing until the model answers, still fits.
    connect_timeout = models.PositiveIntegerField(
        "connect timeout",
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Seconds to wait for a connection. A backend on the network answers in well under one.",
    )
    first_byte_timeout = models.PositiveIntegerField(
        "first-byte timeout",
        default=120,
        validators=[MinValueValidator(1)],
        help_text="Seconds from sending a job to the first byte of the answer. Ollama sends nothing until the "
        "model has loaded and starts answering: 120 s lets a large model load cold from disk. ComfyUI "
        "answers each call (upload, queueing the prompt, its result) at once.",
    )
    idle_timeout = models.PositiveIntegerField(
        "idle timeout",
        default=60,
        validators=[MinValueValidator(1)],
        help_text="Seconds the backend may go silent once it answers: between streamed chunks for Ollama "
        "(a loaded model writes several a second); for ComfyUI, without a WebSocket message or an answer "
        "to a ping, which it gives even while a node runs for minutes.",
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN, editable=False)

    online = models.BooleanField(default=False, editable=False)
    checked_at = models.DateTimeField("last check", null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    version = models.CharField(max_length=100, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "base_url"],
                condition=~models.Q(base_url=""),
                name="one_agent_per_kind_and_url",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def auth_headers(self) -> dict[str, str]:
        """Headers that carry this agent's API key, if it has one."""
        if not self.api_key:
            return {}
        if self.api_key_header:
            return {self.api_key_header: self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}

    @transaction.atomic
    def mark_online(self, discovery: Discovery) -> None:
        """Record a successful check and replace the model list with what it found."""
        self.online = True
        self.checked_at = timezone.now()
        self.last_error = discovery.note
        self.version = discovery.version[:100]
        self.save(update_fields=["online", "checked_at", "last_error", "version"])
        self.replace_models(discovery.models)

    def mark_offline(self, reason: str) -> None:
        """Record a failed check; the models are kept so they come back with the agent."""
        self.online = False
        self.checked_at = timezone.now()
        self.last_error = reason
        self.save(update_fields=["online", "checked_at", "last_error"])

    def replace_models(self, found: Iterable[DiscoveredModel]) -> None:
        found = list(found)
        self.models.exclude(name__in=[m.name for m in found]).delete()
        for model in found:
            AgentModel.objects.update_or_create(
                agent=self, name=model.name, defaults={"capability": model.capability, "details": model.details}
            )


class AgentModelQuerySet(models.QuerySet["AgentModel"]):
    def usable(self) -> AgentModelQuerySet:
        """Models on enabled agents that answered their last check."""
        return self.filter(agent__enabled=True, agent__online=True)

    def accepting_images(self) -> AgentModelQuerySet:
        return self.exclude(capability=Capability.TEXT)


class AgentModel(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    capability = models.CharField("kind of work", max_length=20, choices=Capability.choices)
    details = models.JSONField(default=dict, blank=True, help_text="What discovery learned about it.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentModelQuerySet.as_manager()

    class Meta:
        ordering = ["agent", "name"]
        constraints = [models.UniqueConstraint(fields=["agent", "name"], name="one_model_name_per_agent")]
        verbose_name = "model"

    def __str__(self) -> str:
        return f"{self.name} on {self.agent}"

    @property
    def accepts_images(self) -> bool:
        return self.capability != Capability.TEXT

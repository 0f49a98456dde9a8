from __future__ import annotations

from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from agents.health import check_agents
from agents.models import Agent, AgentModel


class AgentModelInline(admin.TabularInline):
    model = AgentModel
    fields = ("name", "capability", "details", "updated_at")
    readonly_fields = fields  # a tuple, so that mypy also takes it as readonly_fields (strings only)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Agent | None = None) -> bool:
        # Discovery owns this list; hand edits would be overwritten at the next check.
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "status",
        "name",
        "kind",
        "base_url",
        "enabled",
        "priority",
        "concurrency",
        "model_list",
        "checked_at",
        "error",
    ]
    list_display_links = ["name"]
    list_filter = ["kind", "enabled", "online", "source"]
    search_fields = ["name", "base_url", "models__name"]
    readonly_fields = ["online", "checked_at", "version", "last_error", "source"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "base_url", "enabled", "priority", "concurrency"]}),
        ("Timeouts", {"fields": ["connect_timeout", "first_byte_timeout", "idle_timeout"]}),
        ("Authentication", {"fields": ["api_key", "api_key_header"], "classes": ["collapse"]}),
        ("Last check", {"fields": ["online", "checked_at", "version", "last_error", "source"]}),
    ]
    inlines = [AgentModelInline]
    # Agents on a LAN usually speak plain http.
    formfield_overrides = {models.URLField: {"assume_scheme": "http"}}
    actions = ["check_now", "enable", "disable"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).prefetch_related("models")

    @admin.display(description="", ordering="online")
    def status(self, agent: Agent) -> str:
        state, colour = ("disabled", "#9ca3af")
        if agent.enabled:
            state, colour = ("online", "#16a34a") if agent.online else ("offline", "#dc2626")
        return format_html(
            '<span title="{}" aria-label="{}" style="color:{};font-size:1.2em">&#9679;</span>', state, state, colour
        )

    @admin.display(description="models")
    def model_list(self, agent: Agent) -> str:
        usable = [m.name for m in agent.models.all() if m.accepts_images]
        text_only = sum(1 for m in agent.models.all() if not m.accepts_images)
        summary = Truncator(", ".join(usable)).chars(80) or "none"
        return summary + (f" (+{text_only} text only)" if text_only else "")

    @admin.display(description="error or note")
    def error(self, agent: Agent) -> str:
        return Truncator(agent.last_error).chars(100)

    def save_model(self, request: HttpRequest, obj: Agent, form: object, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.enabled and (not change or "base_url" in getattr(form, "changed_data", [])):
            # The admin saves inside a transaction; the check's threads must see the row.
            transaction.on_commit(lambda: self.check_now(request, Agent.objects.filter(pk=obj.pk)))

    @admin.action(description="Check now")
    def check_now(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for name, online in check_agents(queryset).items():
            agent = Agent.objects.get(name=name)
            if online:
                self.message_user(request, f"Agent {name} is online with {agent.models.count()} models.")
            else:
                self.message_user(request, f"Agent {name} is offline: {agent.last_error}", messages.WARNING)

    @admin.action(description="Enable")
    def enable(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        queryset.update(enabled=True)

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        queryset.update(enabled=False)

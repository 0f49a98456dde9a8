"""Agents in the admin: their models, health at a glance, and a check at the press of a button."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from agents.health import check_agents
from agents.models import Agent, AgentModel

# The name is the agent's display name: the page shows it beside each model it runs.
NAME_HELP = "Shown on the page beside the models it runs, e.g. “GPU box”."


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
    # Few and narrow columns, so the list fits a 1280 px screen beside the admin's sidebar:
    # the status dot also says "disabled", the URL goes under the name.
    list_display = [
        "status",
        "name_and_url",
        "kind",
        "priority",
        "concurrency",
        "model_list",
        "last_check",
        "error",
        "check_button",
    ]
    list_display_links = ["name_and_url"]
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

    def formfield_for_dbfield(self, db_field: models.Field, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "name":
            kwargs["help_text"] = NAME_HELP
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_urls(self) -> list[URLPattern]:
        check = self.admin_site.admin_view(require_POST(self.check_view))
        return [path("<int:agent_id>/check/", check, name="agents_agent_check"), *super().get_urls()]

    def check_view(self, request: HttpRequest, agent_id: int) -> HttpResponse:
        """Check one agent now (its row's or its page's button), then go back where the button was."""
        agent = get_object_or_404(Agent, pk=agent_id)
        if not self.has_change_permission(request, agent):
            raise PermissionDenied
        self.check_now(request, Agent.objects.filter(pk=agent.pk))
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, require_https=request.is_secure()):
            back = reverse("admin:agents_agent_change", args=[agent.pk])
        return HttpResponseRedirect(back)

    @admin.display(description="")
    def check_button(self, agent: Agent) -> str:
        # The list is one form already (for its actions): the button posts that form to the check.
        return format_html(
            '<button type="submit" class="button check-now" formaction="{}" formmethod="post" name="next" '
            'value="{}" aria-label="Check {} now">Check now</button>',
            reverse("admin:agents_agent_check", args=[agent.pk]),
            reverse("admin:agents_agent_changelist"),
            agent.name,
        )

    @admin.display(description="", ordering="online")
    def status(self, agent: Agent) -> str:
        state, colour = ("disabled", "#9ca3af")
        if agent.enabled:
            state, colour = ("online", "#16a34a") if agent.online else ("offline", "#dc2626")
        return format_html(
            '<span title="{}" aria-label="{}" style="color:{};font-size:1.2em">&#9679;</span>', state, state, colour
        )

    @admin.display(description="name", ordering="name")
    def name_and_url(self, agent: Agent) -> str:
        if not agent.base_url:
            return agent.name
        return format_html('{}<br><span class="agent-url">{}</span>', agent.name, agent.base_url)

    @admin.display(description="last check", ordering="checked_at")
    def last_check(self, agent: Agent) -> str:
        return f"{timesince(agent.checked_at)} ago" if agent.checked_at else "never"

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

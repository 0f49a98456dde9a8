"""manage.py agent add|list|remove|check|sync"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from agents.health import check_agents
from agents.models import Agent, Kind, Source
from agents.registration import register, register_from_environment


class Command(BaseCommand):
    help = "Add, list, remove and check the AI backends (agents)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)
        add = commands.add_parser("add", help="Register an agent and check it.")
        add.add_argument("kind", choices=[k.value for k in Kind if k != Kind.LOCAL])
        add.add_argument("url", help="Base URL, e.g. http://127.0.0.1:11434")
        add.add_argument("--name", default="")
        add.add_argument("--priority", type=int, default=0)
        add.add_argument("--concurrency", type=int, default=1)
        add.add_argument("--api-key", default="")
        add.add_argument("--api-key-header", default="")
        add.add_argument("--no-check", action="store_true", help="Do not check it now.")
        commands.add_parser("list", help="Show every agent and its status.")
        remove = commands.add_parser("remove", help="Delete agents by name or id.")
        remove.add_argument("agents", nargs="+", metavar="NAME_OR_ID")
        check = commands.add_parser("check", help="Check agents now (all enabled ones by default).")
        check.add_argument("agents", nargs="*", metavar="NAME_OR_ID")
        commands.add_parser(
            "sync", help="Register the built-in agent and those in OLLAMA_URLS/COMFYUI_URLS, then check all."
        )

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"do_{action}")(**options)

    def do_add(self, kind: str, url: str, no_check: bool, **options: Any) -> None:
        fields = {
            "priority": options["priority"],
            "concurrency": options["concurrency"],
            "api_key": options["api_key"],
            "api_key_header": options["api_key_header"],
        }
        agent = Agent(kind=kind, base_url=url.rstrip("/"), name=options["name"] or "x", **fields)
        try:
            agent.clean_fields(exclude=["name"])
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        agent, created = register(kind, url, source=Source.COMMAND, name=options["name"], **fields)
        verb = "Added" if created else "Already registered:"
        self.stdout.write(f"{verb} {agent.name} ({agent.kind}, {agent.base_url})")
        if not no_check:
            self.report(check_agents([agent]))

    def do_list(self, **options: Any) -> None:
        agents = Agent.objects.prefetch_related("models")
        if not agents:
            self.stdout.write("No agents. Add one with: manage.py agent add ollama http://HOST:11434")
        for agent in agents:
            self.stdout.write(describe(agent))

    def do_remove(self, agents: list[str], **options: Any) -> None:
        for agent in find(agents):
            agent.delete()
            self.stdout.write(f"Removed {agent.name}")

    def do_check(self, agents: list[str], **options: Any) -> None:
        chosen = find(agents) if agents else list(Agent.objects.filter(enabled=True))
        self.report(check_agents(chosen))

    def do_sync(self, **options: Any) -> None:
        for agent in register_from_environment():
            self.stdout.write(f"Registered at start: {agent.name} ({agent.base_url or 'built in'})")
        self.report(check_agents(Agent.objects.filter(enabled=True)))

    def report(self, results: dict[str, bool]) -> None:
        for agent in Agent.objects.filter(name__in=results).prefetch_related("models"):
            self.stdout.write(describe(agent))


def find(keys: list[str]) -> list[Agent]:
    """Agents by name or id; an unknown one is an error before anything changes."""
    found = []
    for key in keys:
        match = Q(name=key) | Q(pk=int(key)) if key.isdigit() else Q(name=key)
        agent = Agent.objects.filter(match).first()
        if agent is None:
            raise CommandError(f"No agent named {key!r}. See: manage.py agent list")
        found.append(agent)
    return found


def describe(agent: Agent) -> str:
    status = "disabled" if not agent.enabled else "online" if agent.online else "offline"
    models = [m.name + ("" if m.accepts_images else " (text only)") for m in agent.models.all()]
    line = f"[{agent.pk}] {agent.name}  {agent.kind}  {agent.base_url or '-'}  {status}"
    line += f"\n    models: {', '.join(models) or 'none'}"
    if agent.last_error:
        line += f"\n    {'note' if agent.online else 'error'}: {agent.last_error}"
    return line

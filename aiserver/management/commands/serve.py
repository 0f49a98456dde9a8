"""manage.py serve: prepare, then run the web server and the worker together."""

from __future__ import annotations

import os
import secrets
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from agents.health import check_agents
from agents.models import Agent
from agents.registration import register_from_environment
from aiserver.supervisor import run_together


class Command(BaseCommand):
    help = "Migrate, create the admin account, check agents, then run daphne and the django-q2 worker."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin()
        self.check_agents()
        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl-C stops the server and the worker)")
        sys.exit(run_together(web_command(host, port), worker_command()))

    def ensure_admin(self) -> None:
        """On first run, create the 'admin' account and show its password once."""
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", "", password)
        if "ADMIN_PASSWORD" in os.environ:
            self.stdout.write("Created the admin account 'admin' with the password from ADMIN_PASSWORD.")
        else:
            self.stdout.write(self.style.WARNING(f"Created the admin account 'admin' with password: {password}"))
            self.stdout.write("It is shown only this once; change it in the admin.")

    def check_agents(self) -> None:
        register_from_environment()
        for name, online in check_agents(Agent.objects.filter(enabled=True)).items():
            self.stdout.write(f"Agent {name}: {'online' if online else 'offline'}")


def web_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "aiserver.asgi:application"]


def worker_command() -> list[str]:
    return [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]

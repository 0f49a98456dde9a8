"""manage.py serve: prepare, then run the web server and the worker together."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from agents.health import check_agents
from agents.models import Agent
from agents.registration import register_from_environment
from aiserver.metrics import forget_counts
from aiserver.supervisor import run_together


class Command(BaseCommand):
    help = "Migrate, create the admin account, check agents, then run daphne (WEB_PROCESSES) and the django-q2 worker."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.ensure_admin()
        self.check_agents()
        sockets = listen(host, port, settings.WEB_PROCESSES)
        # The HTTP counts of an earlier run (aiserver/metrics.py); after listen(), so that a second
        # serve on a port in use stops before it wipes the running one's.
        forget_counts()
        webs = [web_command(listening.fileno()) for listening in sockets]
        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl-C stops the server and the worker)")
        # Detached: run_together hands the descriptors to the children and closes them here.
        fds = tuple(listening.detach() for listening in {id(s): s for s in sockets}.values())
        sys.exit(run_together(*webs, worker_command(), pass_fds=fds))

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


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """Listening sockets on one port, one per web process, the kernel spreading new connections
    over them (SO_REUSEPORT); where that option is missing, one socket they all accept from."""
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if reuse_port:
        # SO_REUSEPORT would let a second server share a port that is in use; refuse it first.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as error:
                raise CommandError(f"Cannot listen on {host}:{port}: {error.strerror}") from None
    sockets = []
    for _ in range(count if reuse_port else 1):
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            listening.bind((host.strip("[]"), port))
        except OSError as error:
            raise CommandError(f"Cannot listen on {host}:{port}: {error.strerror}") from None
        listening.listen(1024)
        listening.set_inheritable(True)
        sockets.append(listening)
    return [sockets[n % len(sockets)] for n in range(count)]


def web_command(fd: int) -> list[str]:
    """daphne on an inherited listening socket (trusting a proxy's X-Forwarded-* if PROXY_HEADERS)."""
    proxy = ["--proxy-headers"] if settings.PROXY_HEADERS else []
    return [sys.executable, "-m", "daphne", "--fd", str(fd), *proxy, "aiserver.asgi:application"]


def worker_command() -> list[str]:
    return [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]

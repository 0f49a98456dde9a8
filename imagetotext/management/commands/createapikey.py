"""manage.py createapikey NAME: issue an API key and print only the key, for KEY=$(...)."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from imagetotext.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key. Prints only the key on standard output; notes go to standard error."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. ci.")
        parser.add_argument("--owner", default="", help="Username; default: the only superuser, or 'admin'.")
        parser.add_argument("--expires-in-days", type=int, default=None, metavar="N")
        parser.add_argument(
            "--restrict-to", default="", metavar="API,API", help="e.g. ImageToText,QueueImageToText. Default: all."
        )

    def handle(
        self, *args: Any, name: str, owner: str, expires_in_days: int | None, restrict_to: str, **options: Any
    ) -> None:
        fields = {"restrict_to": api_names(restrict_to), "expires_at": expiry(expires_in_days)}
        user = find_owner(owner)
        row, key = ApiKey.issue(user, name, **fields)
        self.stdout.write(key)
        if options["verbosity"] > 0:
            note = f"Created API key {row.name!r} for {user} ({row.prefix}…); it will not be shown again."
            self.stderr.write(note, style_func=self.style.SUCCESS)


def api_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if bad := ApiKey.invalid_api_names(names):
        raise CommandError(f"Not an API name: {', '.join(bad)} (expected e.g. ImageToText,QueueImageToText)")
    return names


def expiry(days: int | None) -> Any:
    if days is None:
        return None
    if days <= 0:
        raise CommandError("--expires-in-days must be a positive number of days")
    return timezone.now() + timedelta(days=days)


def find_owner(username: str) -> Any:
    """The named user; without a name, the only superuser or else the user called admin."""
    users = get_user_model()._default_manager
    if username:
        try:
            return users.get_by_natural_key(username)
        except users.model.DoesNotExist:
            raise CommandError(f"No user named {username!r}; pass an existing username with --owner") from None
    superusers = list(users.filter(is_superuser=True, is_active=True))
    if len(superusers) == 1:
        return superusers[0]
    if admin := users.filter(**{users.model.USERNAME_FIELD: "admin"}).first():
        return admin
    if not superusers:
        raise CommandError("No superuser to own the key; create one with createsuperuser or pass --owner USERNAME")
    names = ", ".join(sorted(user.get_username() for user in superusers))
    raise CommandError(f"Several superusers ({names}); choose the key's owner with --owner USERNAME")

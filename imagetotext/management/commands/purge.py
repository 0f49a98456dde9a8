"""manage.py purge [--dry-run] [--days N]: delete finished jobs past retention, as the daily task does."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from imagetotext import retention
from imagetotext.conf import Conf


class Command(BaseCommand):
    help = (
        "Delete jobs that finished more than --days (default RETENTION_DAYS) days ago, the batches they empty "
        "and the images no job uses any more. A batch goes only when all its jobs are that old."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Show what would be deleted; delete nothing.")
        parser.add_argument("--days", type=int, default=None, metavar="N", help="Default: RETENTION_DAYS.")

    def handle(self, *args: Any, dry_run: bool, days: int | None, **options: Any) -> None:
        days = Conf.RETENTION_DAYS if days is None else days
        if days <= 0:
            raise CommandError("Nothing to purge: RETENTION_DAYS is 0 (keep everything); pass --days N to choose")
        cutoff = retention.cutoff_for(days)
        when = cutoff.strftime("%Y-%m-%d %H:%M %Z")
        if dry_run:
            self.stdout.write(f"Would delete {retention.plan(cutoff)}: jobs finished before {when}.")
            return
        done = retention.purge(cutoff)
        self.stdout.write(self.style.SUCCESS(f"Deleted {done}: jobs finished before {when}."))

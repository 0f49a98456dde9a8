"""manage.py restore SRC: put a backup (manage.py backup) back, for the embedded SQLite database.

The backup is checked first (its manifest, its database's integrity and counts, its migrations,
its images); then the media files are copied back, and then the database is written into the
live file with SQLite's backup API, so processes that have it open see the restored one.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection, connections
from django.db.migrations.loader import MigrationLoader

from imagetotext.management.commands.backup import FORMAT, MANIFEST, MEDIA, copy_media, described, sqlite_facts
from imagetotext.models import Batch, Job, StoredImage


class Command(BaseCommand):
    help = "Restore a backup made by manage.py backup into the embedded SQLite database and MEDIA_ROOT."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("src", help="A directory written by manage.py backup.")
        parser.add_argument("--force", action="store_true", help="Replace a database that already holds jobs.")

    def handle(self, *args: Any, src: str, force: bool, **options: Any) -> None:
        if connection.vendor != "sqlite":
            raise CommandError(
                "restore is for the embedded SQLite database. For PostgreSQL: pg_restore --clean --if-exists "
                "--no-owner --dbname=<database> SRC/database.dump, then copy SRC/media back to MEDIA_ROOT."
            )
        source = Path(src).resolve()
        manifest = read_manifest(source)
        database = source / manifest["database"]["file"]
        facts = check_database(database, manifest)
        check_media(source / MEDIA, facts["image_files"], manifest)
        if not force and (held := data_held()):
            raise CommandError(f"The database already holds {held}; pass --force to replace it")
        files, size = copy_media(source / MEDIA, Path(settings.MEDIA_ROOT))
        restore_database(database, Path(connection.settings_dict["NAME"]))
        self.stdout.write(
            f"Restored {described(manifest['counts'])} ({files} files, {size / 1e6:.1f} MB of media) "
            f"from the backup of {manifest['created_at']}"
        )
        if unapplied_migrations():
            self.stdout.write("The backup predates some migrations; applying them.")
            call_command("migrate", interactive=False, verbosity=0)


def read_manifest(source: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise CommandError(f"No {MANIFEST} in {source}: not a backup, or one that did not finish") from None
    except ValueError as error:
        raise CommandError(f"{source / MANIFEST} is not JSON: {error}") from None
    if manifest.get("format") != FORMAT:
        raise CommandError(f"{source / MANIFEST} has format {manifest.get('format')!r}; this version reads {FORMAT}")
    if manifest["database"]["engine"] != "sqlite":
        raise CommandError(f"This is a backup of {manifest['database']['engine']}; restore it with pg_restore")
    return manifest


def check_database(database: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The backup's database is whole, is the one the manifest describes, and this code knows its migrations."""
    if not database.is_file():
        raise CommandError(f"The backup's database {database} is missing")
    with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as copy:
        if (verdict := copy.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
            raise CommandError(f"{database} fails its integrity check: {verdict}")
        facts = sqlite_facts(copy)
    if facts["counts"] != manifest["counts"]:
        raise CommandError(f"{database} holds {facts['counts']}, not the manifest's {manifest['counts']}")
    known = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    unknown = sorted(
        f"{app}.{name}" for app, names in facts["migrations"].items() for name in names if (app, name) not in known
    )
    if unknown:
        raise CommandError(f"The backup was made by a newer version (migrations {', '.join(unknown)}); upgrade first")
    return facts


def check_media(media: Path, images: list[tuple[str, int]], manifest: dict[str, Any]) -> None:
    """Every image the backup's database names is in its media (but those already missing when it was made)."""
    known_missing = set(manifest["media"].get("missing", []))
    absent = [name for name, _ in images if name not in known_missing and not (media / name).is_file()]
    if absent:
        raise CommandError(f"{len(absent)} images of the backup are missing from {media}, e.g. {absent[0]}")


def data_held() -> str:
    """What the target database holds, in words; empty when it holds no jobs, batches or images (or no tables)."""
    try:
        counts = {"jobs": Job.objects.count(), "batches": Batch.objects.count(), "images": StoredImage.objects.count()}
    except DatabaseError:  # not migrated yet: nothing to lose
        return ""
    return described(counts) if any(counts.values()) else ""


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Queue with the server's writers on aiserver.sqlite's lock file while the database is replaced."""
    with open(f"{database}.write-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def restore_database(backup: Path, database: Path) -> None:
    """Write the backup into the live database file, page by page, under SQLite's own locks."""
    connections.close_all()
    database.parent.mkdir(parents=True, exist_ok=True)
    with write_lock(database):
        with closing(sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)) as copy:
            with closing(sqlite3.connect(database, timeout=20)) as live:
                copy.backup(live)
                live.execute("PRAGMA journal_mode=WAL")  # as the server opens it (settings.SQLITE_OPTIONS)


def unapplied_migrations() -> bool:
    loader = MigrationLoader(connection, ignore_no_migrations=True)
    return bool(set(loader.disk_migrations) - set(loader.applied_migrations or {}))

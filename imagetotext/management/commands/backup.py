"""manage.py backup DEST: a consistent copy of the database and the media files, with a manifest.

SQLite is copied with its online backup API, one read transaction long: the copy is the
database as it was at one moment, while the web and worker processes go on writing (WAL lets
them). PostgreSQL is dumped by pg_dump, which reads one snapshot too. The media files are
copied after the database, so every image the copied database names is there (files are
written before their row); files added meanwhile are extra and harmless. The manifest is
written last: a backup without one is incomplete, and restore refuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from argparse import ArgumentParser
from contextlib import closing
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from imagetotext.models import Batch, Job, StoredImage
from imagetotext.retention import plural

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "db.sqlite3"
POSTGRES_FILE = "database.dump"
MEDIA = "media"


class Command(BaseCommand):
    help = "Copy the database (consistent while the server runs) and the media files into DEST, with a manifest."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("dest", help="A directory; created, and refused if it holds anything.")
        parser.add_argument("--force", action="store_true", help="Write into DEST even if it is not empty.")

    def handle(self, *args: Any, dest: str, force: bool, **options: Any) -> None:
        started = time.monotonic()
        target = Path(dest).resolve()
        media_root = Path(settings.MEDIA_ROOT).resolve()
        if connection.vendor == "postgresql" and not shutil.which("pg_dump"):
            raise CommandError(pg_dump_instructions(target, media_root))
        if connection.vendor not in {"sqlite", "postgresql"}:
            raise CommandError(f"Backups know SQLite and PostgreSQL, not {connection.vendor}")
        if target == media_root or media_root in target.parents:
            raise CommandError(f"{target} is inside MEDIA_ROOT ({media_root}); choose a directory outside it")
        prepare(target, force)
        if connection.vendor == "sqlite":
            facts = copy_sqlite(Path(connection.settings_dict["NAME"]), target / SQLITE_FILE)
        else:
            facts = dump_postgres(connection.settings_dict, target / POSTGRES_FILE)
        files, size = copy_media(media_root, target / MEDIA)
        missing = complete_media(media_root, target / MEDIA, facts.pop("image_files"))
        write_manifest(target, facts, files, size, missing)
        for name in missing:
            self.stderr.write(self.style.WARNING(f"Missing from MEDIA_ROOT already, not in the backup: {name}"))
        self.stdout.write(
            f"Backed up {described(facts['counts'])} ({files} files, {size / 1e6:.1f} MB of media) "
            f"to {target} in {time.monotonic() - started:.1f} s"
        )


def described(counts: dict[str, int]) -> str:
    """e.g. "4 jobs, 1 batch and 3 images"."""
    return f"{plural(counts['jobs'], 'job')}, {plural(counts['batches'], 'batch', 'batches')} and " + plural(
        counts["images"], "image"
    )


def prepare(target: Path, force: bool) -> None:
    """DEST, created; with --force, an earlier backup in it is cleared, manifest first."""
    if target.exists() and not target.is_dir():
        raise CommandError(f"{target} is not a directory")
    if target.exists() and any(target.iterdir()):
        if not force:
            raise CommandError(f"{target} is not empty; choose a new directory or pass --force")
        (target / MANIFEST).unlink(missing_ok=True)
        for name in (SQLITE_FILE, POSTGRES_FILE):
            (target / name).unlink(missing_ok=True)
        shutil.rmtree(target / MEDIA, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)


def copy_sqlite(source: Path, copy: Path) -> dict[str, Any]:
    """The online backup of the database file, checked, as one self-contained file; its facts."""
    with closing(sqlite3.connect(f"{source.as_uri()}?mode=rw", uri=True, timeout=20)) as live:
        with closing(sqlite3.connect(copy)) as target:
            live.backup(target)  # all pages in one step: one read transaction, one moment
            target.execute("PRAGMA journal_mode=DELETE")  # no -wal file beside the copy
            if (verdict := target.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
                raise CommandError(f"The copy of {source} fails its integrity check: {verdict}")
            return sqlite_facts(target)


def sqlite_facts(database: sqlite3.Connection) -> dict[str, Any]:
    """Counts, applied migrations and image files, read from a copy of the database."""

    def count(model: Any) -> int:
        return int(database.execute(f'SELECT COUNT(*) FROM "{model._meta.db_table}"').fetchone()[0])

    migrations: dict[str, list[str]] = {}
    for app, name in database.execute("SELECT app, name FROM django_migrations ORDER BY app, name"):
        migrations.setdefault(app, []).append(name)
    images = database.execute(f'SELECT file, size FROM "{StoredImage._meta.db_table}"').fetchall()
    return {
        "counts": {"jobs": count(Job), "batches": count(Batch), "images": count(StoredImage)},
        "migrations": migrations,
        "image_files": [(name, int(size)) for name, size in images],
    }


def pg_dump_command(db: dict[str, Any], file: Path) -> tuple[list[str], dict[str, str]]:
    """pg_dump's arguments and environment for a DATABASES entry; the password goes in the environment."""
    argv = ["pg_dump", "--format=custom", "--no-password", f"--file={file}"]
    for option, key in (("--host", "HOST"), ("--port", "PORT"), ("--username", "USER")):
        if db.get(key):
            argv.append(f"{option}={db[key]}")
    argv.append(f"--dbname={db['NAME']}")
    env = {"PGPASSWORD": str(db["PASSWORD"])} if db.get("PASSWORD") else {}
    if sslmode := db.get("OPTIONS", {}).get("sslmode"):
        env["PGSSLMODE"] = str(sslmode)
    return argv, env


def dump_postgres(db: dict[str, Any], file: Path) -> dict[str, Any]:
    """pg_dump's custom format (one snapshot); the facts are read just after it, from the live database."""
    argv, env = pg_dump_command(db, file)
    result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        file.unlink(missing_ok=True)
        raise CommandError(f"pg_dump failed (exit {result.returncode}): {result.stderr.strip()}")
    applied = MigrationRecorder(connection).applied_migrations()
    migrations: dict[str, list[str]] = {}
    for app, name in sorted(applied):
        migrations.setdefault(app, []).append(name)
    return {
        "counts": {
            "jobs": Job.objects.count(),
            "batches": Batch.objects.count(),
            "images": StoredImage.objects.count(),
        },
        "migrations": migrations,
        "image_files": list(StoredImage.objects.values_list("file", "size")),
    }


def pg_dump_instructions(target: Path, media_root: Path) -> str:
    db = connection.settings_dict
    argv, _ = pg_dump_command(db, target / POSTGRES_FILE)
    password = "PGPASSWORD='<the password in DATABASE_URL>' " if db.get("PASSWORD") else ""
    return (
        "pg_dump is not on PATH, so nothing was written. Install PostgreSQL's client tools (the server's "
        "major version or newer, e.g. apt install postgresql-client) and run this again, or back up by hand:\n"
        f"  mkdir -p {target}\n"
        f"  {password}{' '.join(argv)}\n"
        f"  cp -a {media_root} {target / MEDIA}   # after the dump, so every image it names is copied\n"
        f"To restore: pg_restore --clean --if-exists --no-owner --dbname=<database> {target / POSTGRES_FILE}, "
        "then copy the media directory back to MEDIA_ROOT."
    )


def copy_media(source: Path, target: Path) -> tuple[int, int]:
    """Every file under MEDIA_ROOT, with its times; (files, bytes) copied."""
    target.mkdir(parents=True, exist_ok=True)
    files = size = 0
    for path in sorted(source.rglob("*")) if source.is_dir() else []:
        if path.is_file() and copy_file(path, target / path.relative_to(source)):
            files, size = files + 1, size + path.stat().st_size
    return files, size


def copy_file(source: Path, target: Path) -> bool:
    """False when the file went away before it could be copied (an image deleted meanwhile)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(source, target)
    except FileNotFoundError:
        return False
    return True


def complete_media(media_root: Path, target: Path, images: list[tuple[str, int]]) -> list[str]:
    """Copy again any image the database names whose copy is missing or short; the names MEDIA_ROOT lacks."""
    missing = []
    for name, size in images:
        copied = target / name
        if copied.is_file() and copied.stat().st_size == size:
            continue
        if not copy_file(media_root / name, copied):
            missing.append(name)
    return missing


def write_manifest(target: Path, facts: dict[str, Any], files: int, size: int, missing: list[str]) -> None:
    manifest = {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "database": {
            "engine": connection.vendor,
            "file": SQLITE_FILE if connection.vendor == "sqlite" else POSTGRES_FILE,
        },
        "counts": facts["counts"],
        "migrations": facts["migrations"],
        "media": {"directory": MEDIA, "files": files, "bytes": size, "missing": missing},
    }
    # Written whole, then renamed: a manifest is there only once the backup is complete.
    draft = target / f".{MANIFEST}.partial"
    draft.write_text(json.dumps(manifest, indent=2) + "\n")
    draft.replace(target / MANIFEST)

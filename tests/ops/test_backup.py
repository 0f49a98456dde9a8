"""manage.py backup and restore: a consistent copy of the database and media, and its round trip."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
from contextlib import closing
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from PIL import Image

from imagetotext.management.commands.backup import pg_dump_command
from imagetotext.models import Batch, Job, JobImage, State, StoredImage, store_image

sqlite_only = pytest.mark.skipif(connection.vendor != "sqlite", reason="the embedded (SQLite) configuration")
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the scale-out (PostgreSQL) pass")


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def png(n: int) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (32 + n, 24), (n * 40 % 256, 80, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def stored(n: int) -> StoredImage:
    return store_image(png(n), "image/png", 32 + n, 24)[0]


def make_history(owner: Any) -> None:
    """A finished job, a job with two images, and a batch of two, sharing an image."""
    first, second, third = stored(1), stored(2), stored(3)
    now = timezone.now()
    Job.objects.create(
        owner=owner, image=first, model="llava:7b", state=State.COMPLETED, output="A red square", finished_at=now
    )
    pair = Job.objects.create(
        owner=owner, image=second, model="llava:7b", image_count=2, state=State.FAILED, error="No agent"
    )
    JobImage.objects.create(job=pair, image=third, position=1)
    batch = Batch.objects.create(owner=owner, name="set.zip", model="llava:7b", total=2)
    for n, image in enumerate([first, third]):
        Job.objects.create(owner=owner, image=image, batch=batch, path=f"{n}.png", model="llava:7b", output=f"item {n}")


def history() -> dict[str, Any]:
    """What a user would see of the jobs, and the image files' bytes."""
    jobs = {
        job.pk: (
            job.state,
            job.output,
            job.error,
            job.batch.name if job.batch else None,
            [i.sha256 for i in job.stored_images()],
        )
        for job in Job.objects.select_related("batch", "image")
    }
    files = {image.file.name: image.file.open("rb").read() for image in StoredImage.objects.all()}
    return {"jobs": jobs, "files": files}


def wipe(media: Path) -> None:
    Job.objects.all().delete()
    Batch.objects.all().delete()
    StoredImage.objects.all().delete()
    shutil.rmtree(media)


def backup(dest: Path, *args: str) -> str:
    out = StringIO()
    call_command("backup", str(dest), *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def restore(src: Path, *args: str) -> str:
    out = StringIO()
    call_command("restore", str(src), *args, stdout=out)
    return out.getvalue()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_backup_restored_after_a_wipe_brings_back_the_same_jobs_and_image_bytes(api_user, media, tmp_path) -> None:
    make_history(api_user)
    before = history()
    assert len(before["jobs"]) == 4 and len(before["files"]) == 3

    said = backup(tmp_path / "backup")
    wipe(media)
    assert history() == {"jobs": {}, "files": {}}
    restore(tmp_path / "backup")

    assert "Backed up 4 jobs, 1 batch and 3 images" in said
    assert history() == before
    assert sorted(p.name for p in media.rglob("*") if p.is_file()) == sorted(Path(n).name for n in before["files"])


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_the_manifest_gives_the_engine_counts_and_migration_state(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())

    assert manifest["database"] == {"engine": "sqlite", "file": "db.sqlite3"}
    assert manifest["counts"] == {"jobs": 4, "batches": 1, "images": 3}
    applied = MigrationRecorder(connection).applied_migrations()
    assert manifest["migrations"]["imagetotext"] == sorted(name for app, name in applied if app == "imagetotext")
    assert manifest["media"]["files"] == 3 and manifest["media"]["missing"] == []
    assert manifest["media"]["bytes"] == sum(image.size for image in StoredImage.objects.all())
    assert timezone.datetime.fromisoformat(manifest["created_at"]) <= timezone.now()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_the_copy_is_one_self_contained_file(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    copy = tmp_path / "backup" / "db.sqlite3"
    with closing(sqlite3.connect(copy)) as database:
        assert database.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert database.execute("SELECT COUNT(*) FROM imagetotext_job").fetchone()[0] == 4
    assert not Path(f"{copy}-wal").exists()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_a_backup_taken_while_another_thread_writes_jobs_is_consistent(api_user, media, tmp_path) -> None:
    stop, written = threading.Event(), []

    def write_jobs() -> None:
        try:
            n = 10
            while not stop.is_set():
                Job.objects.create(owner=api_user, image=stored(n), model="llava:7b", state=State.COMPLETED)
                written.append(n)
                n += 1
        finally:
            connection.close()

    writer = threading.Thread(target=write_jobs)
    writer.start()
    try:
        copies = []
        for n in range(3):
            while len(written) < 5 * (n + 1):
                stop.wait(0.01)
            backup(tmp_path / f"backup-{n}")
            copies.append(tmp_path / f"backup-{n}")
        seen_by_last = len(written)
        while len(written) < seen_by_last + 3:  # it went on writing after the last backup
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join()

    for copy in copies:
        manifest = json.loads((copy / "manifest.json").read_text())
        with closing(sqlite3.connect(copy / "db.sqlite3")) as database:
            assert database.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert database.execute("PRAGMA foreign_key_check").fetchall() == []  # each job's image is there
            jobs = database.execute("SELECT COUNT(*) FROM imagetotext_job").fetchone()[0]
            images = database.execute("SELECT sha256, file FROM imagetotext_storedimage").fetchall()
        assert (jobs, len(images)) == (manifest["counts"]["jobs"], manifest["counts"]["images"])
        assert jobs > 0
        for sha256, name in images:  # every image the copy names is there, whole
            assert hashlib.sha256((copy / "media" / name).read_bytes()).hexdigest() == sha256
    assert manifest["counts"]["jobs"] < Job.objects.count()


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_backup_refuses_a_directory_that_holds_anything_unless_forced(api_user, media, tmp_path) -> None:
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="not empty"):
        backup(dest)
    assert not (dest / "manifest.json").exists()

    make_history(api_user)
    backup(dest, "--force")
    assert json.loads((dest / "manifest.json").read_text())["counts"]["jobs"] == 4


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_database_that_holds_jobs_unless_forced(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    later = Job.objects.create(owner=api_user, image=stored(9), model="llava:7b")

    with pytest.raises(CommandError, match="already holds 5 jobs, 1 batch and 4 images"):
        restore(tmp_path / "backup")
    assert Job.objects.filter(pk=later.pk).exists()

    restore(tmp_path / "backup", "--force")
    assert not Job.objects.filter(pk=later.pk).exists()
    assert Job.objects.count() == 4


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_directory_without_a_manifest(media, tmp_path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "db.sqlite3").write_bytes(b"")
    with pytest.raises(CommandError, match="No manifest.json"):
        restore(tmp_path / "half")


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_backup_from_a_newer_version(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    with closing(sqlite3.connect(tmp_path / "backup" / "db.sqlite3")) as database:
        database.execute(
            "INSERT INTO django_migrations (app, name, applied) VALUES ('imagetotext', '9999_future', '2030-01-01')"
        )
        database.commit()
    wipe(media)
    with pytest.raises(CommandError, match="newer version.*imagetotext.9999_future"):
        restore(tmp_path / "backup")
    assert Job.objects.count() == 0


@sqlite_only
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_backup_whose_images_are_gone(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    shutil.rmtree(tmp_path / "backup" / "media" / "images")
    wipe(media)
    with pytest.raises(CommandError, match="3 images of the backup are missing"):
        restore(tmp_path / "backup")
    assert Job.objects.count() == 0


def test_pg_dump_gets_the_connection_as_arguments_and_the_password_in_its_environment(tmp_path) -> None:
    db = {
        "NAME": "aiserver",
        "USER": "app",
        "PASSWORD": "s3cret",
        "HOST": "db",
        "PORT": 5433,
        "OPTIONS": {"sslmode": "require"},
    }
    argv, env = pg_dump_command(db, tmp_path / "database.dump")
    assert argv[:2] == ["pg_dump", "--format=custom"]
    assert {
        "--host=db",
        "--port=5433",
        "--username=app",
        "--dbname=aiserver",
        f"--file={tmp_path / 'database.dump'}",
    } <= set(argv)
    assert "s3cret" not in " ".join(argv)
    assert env == {"PGPASSWORD": "s3cret", "PGSSLMODE": "require"}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_without_pg_dump_the_backup_says_how_and_writes_nothing(media, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CommandError, match="pg_dump is not on PATH") as refused:
        backup(tmp_path / "backup")
    assert "pg_dump --format=custom" in str(refused.value)
    assert not (tmp_path / "backup").exists()


@postgres_only
@pytest.mark.skipif(not shutil.which("pg_dump"), reason="needs pg_dump")
@pytest.mark.django_db(transaction=True)
def test_with_pg_dump_the_backup_holds_a_custom_format_dump(api_user, media, tmp_path) -> None:
    make_history(api_user)
    backup(tmp_path / "backup")
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["database"] == {"engine": "postgresql", "file": "database.dump"}
    assert manifest["counts"] == {"jobs": 4, "batches": 1, "images": 3}
    assert (tmp_path / "backup" / "database.dump").read_bytes()[:5] == b"PGDMP"
    assert len(list((tmp_path / "backup" / "media" / "images").rglob("*.png"))) == 3

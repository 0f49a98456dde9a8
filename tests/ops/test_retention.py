"""Retention: old finished jobs go, with the batches they empty and the images no kept job uses."""

from __future__ import annotations

import importlib
from datetime import timedelta
from io import BytesIO, StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule
from PIL import Image

from imagetotext import retention
from imagetotext.conf import Conf
from imagetotext.models import (
    Batch,
    CallbackAttempt,
    CallbackDelivery,
    Job,
    JobImage,
    State,
    StoredImage,
    store_image,
)

pytestmark = pytest.mark.django_db(transaction=True)
DAYS = 30


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored(n: int, days_ago: float = DAYS + 10) -> StoredImage:
    buffer = BytesIO()
    Image.new("RGB", (16 + n, 16), (n * 30 % 256, 0, 0)).save(buffer, "PNG")
    image = store_image(buffer.getvalue(), "image/png", 16 + n, 16)[0]
    StoredImage.objects.filter(pk=image.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return image


def job(
    owner: Any, image: StoredImage, finished_days_ago: float | None, state: str = State.COMPLETED, **fields: Any
) -> Job:
    """A job that finished so many days ago (None: not finished)."""
    if finished_days_ago is None:
        state = State.STARTED if state == State.COMPLETED else state
        finished = None
    else:
        finished = timezone.now() - timedelta(days=finished_days_ago)
    created = timezone.now() - timedelta(days=(finished_days_ago or 0) + 1)
    return Job.objects.create(
        owner=owner, image=image, model="llava:7b", state=state, finished_at=finished, created_at=created, **fields
    )


def old_batch(owner: Any) -> Batch:
    return Batch.objects.create(owner=owner, model="llava:7b", created_at=timezone.now() - timedelta(days=DAYS + 20))


def purge() -> retention.Purge:
    return retention.purge(retention.cutoff_for(DAYS))


def on_disk(image: StoredImage) -> bool:
    return Path(image.file.path).is_file()


def test_an_old_finished_job_goes_with_its_image_row_and_file(api_user, media) -> None:
    image = stored(1)
    old = job(api_user, image, DAYS + 5, state=State.FAILED)
    assert on_disk(image)

    done = purge()

    assert (done.jobs, done.images, done.bytes) == (1, 1, image.size)
    assert not Job.objects.filter(pk=old.pk).exists()
    assert not StoredImage.objects.filter(pk=image.pk).exists()
    assert not on_disk(image)


def test_a_kept_jobs_images_survive_first_and_later(api_user, media) -> None:
    first, later = stored(1), stored(2)
    recent = job(api_user, first, DAYS - 5, image_count=2)
    JobImage.objects.create(job=recent, image=later, position=1)

    done = purge()

    assert (done.jobs, done.images) == (0, 0)
    assert {first.pk, later.pk} == set(StoredImage.objects.values_list("pk", flat=True))
    assert on_disk(first) and on_disk(later)


def test_an_image_shared_by_an_old_and_a_new_job_survives(api_user, media) -> None:
    shared, shared_later, own = stored(1), stored(2), stored(3)
    old = job(api_user, shared, DAYS + 5, image_count=2)
    JobImage.objects.create(job=old, image=own, position=1)
    job(api_user, shared, DAYS - 5)
    older = job(api_user, stored(4), DAYS + 50, image_count=2)
    JobImage.objects.create(job=older, image=shared_later, position=1)
    newer = job(api_user, stored(5), 1, image_count=2)
    JobImage.objects.create(job=newer, image=shared_later, position=1)  # kept only as a later image

    assert retention.plan(retention.cutoff_for(DAYS)).images == 2  # own, and the older job's first
    done = purge()

    assert done.jobs == 2
    assert not Job.objects.filter(pk__in=[old.pk, older.pk]).exists()
    assert StoredImage.objects.filter(pk__in=[shared.pk, shared_later.pk]).count() == 2
    assert on_disk(shared) and on_disk(shared_later)
    assert not StoredImage.objects.filter(pk=own.pk).exists() and not on_disk(own)


def test_unfinished_and_recent_jobs_stay_however_old(api_user, media) -> None:
    running = job(api_user, stored(1), None)
    queued = job(api_user, stored(2), None, state=State.QUEUED)
    recent = job(api_user, stored(3), DAYS - 1, state=State.CANCELLED)
    cancelled_still_running = job(
        api_user, stored(4), DAYS + 5, state=State.CANCELLED, lease_until=timezone.now() + timedelta(seconds=30)
    )

    assert purge().jobs == 0
    assert set(Job.objects.values_list("pk", flat=True)) == {
        running.pk,
        queued.pk,
        recent.pk,
        cancelled_still_running.pk,
    }
    assert StoredImage.objects.count() == 4


def test_a_batch_goes_whole_only_when_every_job_of_it_is_old(api_user, media) -> None:
    gone, kept, unfinished = old_batch(api_user), old_batch(api_user), old_batch(api_user)
    for n in range(3):
        job(api_user, stored(n), DAYS + 5 + n, batch=gone)
        job(api_user, stored(10 + n), DAYS + 5 + n, batch=kept)
        job(api_user, stored(20 + n), DAYS + 5 + n, batch=unfinished)
    job(api_user, stored(19), 2, batch=kept)  # one recent item keeps the dataset whole
    job(api_user, stored(29), None, state=State.QUEUED, batch=unfinished)

    done = purge()

    assert (done.jobs, done.batches, done.images) == (3, 1, 3)
    assert not Batch.objects.filter(pk=gone.pk).exists()
    assert kept.jobs.count() == 4 and unfinished.jobs.count() == 4
    assert StoredImage.objects.count() == 8


def test_a_recent_batch_with_no_job_left_stays(api_user, media) -> None:
    empty_new = Batch.objects.create(owner=api_user, model="llava:7b")
    old_batch(api_user)
    assert purge().batches == 1
    assert list(Batch.objects.values_list("pk", flat=True)) == [empty_new.pk]


def test_callback_deliveries_and_attempts_go_with_their_job_and_batch(api_user, media) -> None:
    batch = old_batch(api_user)
    alone = job(api_user, stored(1), DAYS + 5, reply_to="https://example.com/hook")
    member = job(api_user, stored(2), DAYS + 5, batch=batch)
    CallbackDelivery.objects.create(job=alone, key="k-job", state="Delivered")
    CallbackAttempt.objects.create(job=alone, number=1, outcome="Delivered")
    CallbackDelivery.objects.create(batch=batch, key="k-batch", state="Delivered")
    CallbackAttempt.objects.create(batch=batch, number=1, outcome="Failed")
    kept = job(api_user, stored(3), 1)
    CallbackAttempt.objects.create(job=kept, number=1, outcome="Delivered")

    purge()

    assert not Job.objects.filter(pk__in=[alone.pk, member.pk]).exists()
    assert CallbackDelivery.objects.count() == 0
    assert list(CallbackAttempt.objects.values_list("job_id", flat=True)) == [kept.pk]


def test_the_plan_counts_what_the_purge_then_deletes(api_user, media) -> None:
    batch = old_batch(api_user)
    shared = stored(1)
    job(api_user, shared, DAYS + 5, batch=batch)
    job(api_user, stored(2), DAYS + 5, batch=batch)
    job(api_user, shared, DAYS + 1)
    job(api_user, shared, 3)
    stored(3)  # never used by a job, stored long ago

    planned = retention.plan(retention.cutoff_for(DAYS))
    assert Job.objects.count() == 4  # planning deletes nothing

    assert purge() == planned
    assert (planned.jobs, planned.batches, planned.images) == (3, 1, 2)


def test_the_daily_task_does_nothing_while_retention_is_off(api_user, media, monkeypatch) -> None:
    job(api_user, stored(1, days_ago=401), 400)
    monkeypatch.setattr(Conf, "RETENTION_DAYS", 0)
    assert "off" in retention.purge_expired()
    assert Job.objects.count() == 1

    monkeypatch.setattr(Conf, "RETENTION_DAYS", 365)
    assert retention.purge_expired() == "Deleted 1 job, 0 batches, 1 image (0.0 MB)"
    assert Job.objects.count() == 0


def test_the_migration_schedules_the_task_daily() -> None:
    Schedule.objects.all().delete()
    importlib.import_module("imagetotext.migrations.0013_retention_schedule").add_schedule(apps, None)
    schedule = Schedule.objects.get(func="imagetotext.retention.purge_expired")
    assert schedule.schedule_type == Schedule.DAILY and schedule.repeats < 0
    assert import_string(schedule.func) is retention.purge_expired


def test_purge_dry_run_shows_counts_and_bytes_and_deletes_nothing(api_user, media) -> None:
    image = stored(1)
    job(api_user, image, 12)
    out = StringIO()

    call_command("purge", "--dry-run", "--days", "10", stdout=out)

    assert f"Would delete 1 job, 0 batches, 1 image ({image.size / 1e6:.1f} MB)" in out.getvalue()
    assert Job.objects.count() == 1 and on_disk(image)


def test_purge_deletes_with_days_or_retention_days(api_user, media, monkeypatch) -> None:
    job(api_user, stored(1), 12)
    job(api_user, stored(2), 5)
    out = StringIO()
    call_command("purge", "--days", "10", stdout=out)
    assert "Deleted 1 job, 0 batches, 1 image" in out.getvalue()
    assert Job.objects.count() == 1

    monkeypatch.setattr(Conf, "RETENTION_DAYS", 3)
    call_command("purge", stdout=StringIO())
    assert Job.objects.count() == 0 and StoredImage.objects.count() == 0


def test_purge_without_a_retention_says_how_to_choose_one(monkeypatch) -> None:
    monkeypatch.setattr(Conf, "RETENTION_DAYS", 0)
    with pytest.raises(CommandError, match="RETENTION_DAYS is 0"):
        call_command("purge", "--dry-run")


def test_an_upload_of_the_same_bytes_during_a_purge_keeps_the_image(api_user, media) -> None:
    """The upload found the old unused image and is about to give it a job when the purge runs:
    the purge waits for it (PostgreSQL: the row the upload found is locked; SQLite: one writer),
    then leaves the image, its row and its file, to the new job."""
    from django.db import transaction

    from tests.meanwhile import Meanwhile

    image = stored(3)
    data = Path(image.file.path).read_bytes()
    purging = Meanwhile(purge)
    with transaction.atomic():
        again, created = store_image(data, "image/png", image.width, image.height)
        assert (again.pk, created) == (image.pk, False)
        purging.go()
        assert not purging.done.wait(1.0)  # the purge waits for this upload to end
        uploaded = job(api_user, again, None)
    done = purging.join()

    assert done.images == 0
    assert Job.objects.get(pk=uploaded.pk).image_id == image.pk
    assert on_disk(StoredImage.objects.get(pk=image.pk))

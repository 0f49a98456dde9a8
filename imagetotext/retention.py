"""Retention: finished jobs older than RETENTION_DAYS are deleted, with the batches they leave
empty and the images no job uses any more.

A batch is a dataset: its jobs go only when all of them finished before the cutoff, so a batch
with one recent or unfinished item keeps every item. An image goes only when no remaining job
uses it, as its first image (Job.image) or a later one (JobImage.image). Callback deliveries and
attempts go with their job or batch (on_delete=CASCADE).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from imagetotext.conf import Conf
from imagetotext.models import FINISHED, Batch, Job, JobImage, StoredImage

log = logging.getLogger(__name__)

# Times a chunk of images is looked at again after uploads took some of them up meanwhile.
RETRIES = 5
# Rows deleted per transaction: a first purge of a long history neither holds the write lock
# for long nor loads every row at once.
CHUNK = 500


@dataclass
class Purge:
    """What a purge deleted, or would delete."""

    jobs: int = 0
    batches: int = 0
    images: int = 0
    bytes: int = 0

    def __str__(self) -> str:
        return (
            f"{plural(self.jobs, 'job')}, {plural(self.batches, 'batch', 'batches')}, "
            f"{plural(self.images, 'image')} ({self.bytes / 1e6:.1f} MB)"
        )


def plural(count: int, one: str, many: str = "") -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def cutoff_for(days: int) -> datetime:
    """The moment before which a finished job is old enough to go."""
    return timezone.now() - timedelta(days=days)


def old(cutoff: datetime) -> Q:
    """A job that finished before the cutoff and whose run has let go of its agent slot."""
    released = Q(lease_until__isnull=True) | Q(lease_until__lt=timezone.now())
    return Q(state__in=FINISHED, finished_at__lt=cutoff) & released


def expired_jobs(cutoff: datetime) -> QuerySet[Job]:
    """Old jobs that are alone, or in a batch whose every job is old."""
    kept_beside = Job.objects.filter(batch=OuterRef("batch")).exclude(old(cutoff))
    return Job.objects.filter(old(cutoff)).exclude(Exists(kept_beside)).order_by("pk")


def emptied_batches(cutoff: datetime) -> QuerySet[Batch]:
    """Batches made before the cutoff that hold no job a purge keeps."""
    kept = Job.objects.filter(batch=OuterRef("pk")).exclude(old(cutoff))
    return Batch.objects.filter(created_at__lt=cutoff).exclude(Exists(kept)).order_by("pk")


def unused_images(cutoff: datetime, going: QuerySet[Job]) -> QuerySet[StoredImage]:
    """Images stored before the cutoff that no job outside `going` uses, first or later."""
    going_ids = going.values("pk")
    as_first = Job.objects.filter(image=OuterRef("pk")).exclude(pk__in=going_ids)
    as_later = JobImage.objects.filter(image=OuterRef("pk")).exclude(job__in=going_ids)
    unused = StoredImage.objects.filter(created_at__lt=cutoff).exclude(Exists(as_first)).exclude(Exists(as_later))
    return unused.order_by("pk")


def plan(cutoff: datetime) -> Purge:
    """What purge(cutoff) would delete now, deleting nothing."""
    images = unused_images(cutoff, expired_jobs(cutoff))
    return Purge(
        jobs=expired_jobs(cutoff).count(),
        batches=emptied_batches(cutoff).count(),
        images=images.count(),
        bytes=images.aggregate(total=Sum("size"))["total"] or 0,
    )


def purge(cutoff: datetime) -> Purge:
    """Delete the expired jobs, then the batches they emptied, then the images left unused."""
    done = Purge(jobs=delete_jobs(cutoff))
    with transaction.atomic():
        done.batches = emptied_batches(cutoff).delete()[1].get(Batch._meta.label, 0)
    done.images, done.bytes = delete_images(cutoff)
    return done


def delete_jobs(cutoff: datetime) -> int:
    deleted = 0
    while ids := list(expired_jobs(cutoff).values_list("pk", flat=True)[:CHUNK]):
        with transaction.atomic():
            # Checked again in the deleting transaction: a job run again meanwhile stays.
            counts = expired_jobs(cutoff).filter(pk__in=ids).delete()[1]
        if not counts.get(Job._meta.label):
            break
        deleted += counts[Job._meta.label]
    return deleted


def delete_images(cutoff: datetime) -> tuple[int, int]:
    """Unused images' rows, then their files; (images, bytes) deleted."""
    deleted = size = clashes = 0
    storage = StoredImage._meta.get_field("file").storage
    while rows := list(unused_images(cutoff, Job.objects.none()).values_list("pk", "file", "size")[:CHUNK]):
        ids = [pk for pk, _, _ in rows]
        try:
            with transaction.atomic():
                # As the page's delete does: an upload of the same bytes meanwhile keeps the image.
                StoredImage.objects.filter(pk__in=ids, jobs__isnull=True, later_in_jobs__isnull=True).delete()
        except (ProtectedError, IntegrityError):
            # A job took one up between the check and the delete (PostgreSQL checks the job's
            # key at commit; an upload that found the row holds it until then): look again.
            clashes += 1
            if clashes > RETRIES:
                raise
            continue
        kept = set(StoredImage.objects.filter(pk__in=ids).values_list("pk", flat=True))
        gone = [(name, nbytes) for pk, name, nbytes in rows if pk not in kept]
        if not gone:
            break
        for name, nbytes in gone:
            storage.delete(name)
            deleted, size = deleted + 1, size + nbytes
    return deleted, size


def purge_expired() -> str:
    """The daily task (django-q2 schedule): purge what RETENTION_DAYS lets go, if it is set."""
    if Conf.RETENTION_DAYS <= 0:
        return "Retention is off (RETENTION_DAYS=0): nothing deleted"
    done = purge(cutoff_for(Conf.RETENTION_DAYS))
    log.info("Retention of %d days: deleted %s", Conf.RETENTION_DAYS, done)
    return f"Deleted {done}"

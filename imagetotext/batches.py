"""Batches: many images sent together, followed, edited, retried, cancelled and exported together.

The API and the page both go through these functions. A batch is validated once (model, preset,
limits), then each item is stored as its own queued job, so one bad image is skipped with its
reason and never sinks the others. When its last item ends the batch is finished once, and its
ReplyTo (if any) is owed one callback through the same outbox as jobs' (imagetotext.callbacks).
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, BinaryIO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from imagetotext import jobs
from imagetotext.callbacks import owe_batch
from imagetotext.conf import Conf
from imagetotext.dataset import ExportRow, ZipLimits, read_zip, sanitised_path
from imagetotext.errors import ImageRejected, Refusal
from imagetotext.images import UploadedImage, read_upload, read_uploaded_file
from imagetotext.live import publish_change
from imagetotext.models import FINISHED, ApiKey, Batch, Duplicates, InvalidTransition, Job, Preset, State, store_image

MAX_CAPTION_CHARS = 100_000
# Items ended within this long make the rate the page shows.
RATE_WINDOW = timedelta(minutes=5)


class Limits:
    """How much one batch may hold (settings BATCH_MAX_ITEMS, BATCH_MAX_BYTES); tests monkeypatch these."""

    MAX_ITEMS: int = settings.BATCH_MAX_ITEMS
    MAX_BYTES: int = settings.BATCH_MAX_BYTES


@dataclass
class BatchOptions:
    """What a batch asks for, as the page or the API read it (not yet checked)."""

    model: str = ""
    prompt: str = ""
    preset: str = ""
    tag: str = ""
    prefix: str = ""
    suffix: str = ""
    duplicates: str = Duplicates.AGAIN
    reply_to: str = ""
    reply_state: str = ""
    ref_id: str = ""
    name: str = ""


@dataclass
class BatchItem:
    """One file of a batch: its name (a path inside a ZIP) and how to read it; size if known beforehand."""

    path: str
    open: Callable[[], BinaryIO]
    size: int | None = None


def items_from_zip(file: BinaryIO) -> tuple[list[BatchItem], list[dict[str, str]]]:
    """A ZIP's images as items, and the members skipped ({"path", "reason"}); Refusal if refused whole."""
    contents = read_zip(file, ZipLimits(max_items=Limits.MAX_ITEMS, max_total_bytes=Limits.MAX_BYTES))
    if contents.refused:
        raise Refusal(contents.refused, 400, "ArgumentException", "Zip")
    items = [BatchItem(member.path, member.open, member.size) for member in contents.items]
    return items, [{"path": each.path, "reason": each.reason} for each in contents.skipped]


# --- creating -----------------------------------------------------------------------------------


def create_batch(
    owner: Any,
    options: BatchOptions,
    items: list[BatchItem],
    skipped: list[dict[str, str]] | None = None,
    api_key: ApiKey | None = None,
) -> Batch:
    """Check the batch once, then store each item as a queued job, in the order given; returns it with total set."""
    spec, preset = _validated(owner, options, items, api_key)
    batch = Batch.objects.create(
        owner=owner,
        api_key=api_key,
        name=options.name[:200],
        model=spec.fields["model"],
        prompt=spec.fields["prompt"],
        florence_task=spec.fields["florence_task"],
        preset=preset,
        tag=options.tag[:100],
        prefix=options.prefix,
        suffix=options.suffix,
        duplicates=options.duplicates,
        reply_to=options.reply_to,
        reply_state=options.reply_state,
        **({"ref_id": options.ref_id} if options.ref_id else {}),
    )
    left_out = list(skipped or [])
    total = 0
    for item in items:
        path = sanitised_path(item.path)[0] or posixpath.basename(item.path) or "image"
        try:
            _add_item(batch, spec, path, item)
            total += 1
        except Refusal as refusal:  # this image alone; the others go on
            left_out.append({"path": path, "reason": refusal.message})
    if not total:
        batch.delete()
        reasons = "; ".join(f"{each['path']}: {each['reason']}" for each in left_out[:5])
        raise Refusal(f"No image of the batch could be read ({reasons})", 400, "ArgumentException", "Image")
    Batch.objects.filter(pk=batch.pk).update(total=total, skipped=left_out)
    batch.total, batch.skipped = total, left_out
    _finish_if_ended(batch.pk)  # every item may have reused an earlier caption, or ended already
    batch.refresh_from_db(fields=["finished_at"])
    return batch


def _validated(
    owner: Any, options: BatchOptions, items: list[BatchItem], api_key: ApiKey | None
) -> tuple[jobs.JobSpec, Preset | None]:
    """Everything that refuses a whole batch, before anything is written."""
    if options.duplicates not in Duplicates.values:
        allowed = ", ".join(Duplicates.values)
        raise Refusal(f"Duplicates must be one of {allowed}, not {options.duplicates!r}", field="Duplicates")
    if not items:
        raise Refusal("The batch holds no image", field="Image")
    if len(items) > Limits.MAX_ITEMS:
        raise Refusal(f"The batch holds {len(items)} images; the limit is {Limits.MAX_ITEMS}", 413, "BatchTooLarge")
    size = sum(_size(item) for item in items)
    if size > Limits.MAX_BYTES:
        raise Refusal(
            f"The batch holds {size / 2**20:.3g} MB; the limit is {Limits.MAX_BYTES / 2**20:.3g} MB",
            413,
            "BatchTooLarge",
        )
    if options.ref_id and Batch.objects.filter(owner=owner, ref_id=options.ref_id).exists():
        raise Refusal(f"RefId {options.ref_id} is already in use", field="RefId")
    preset = None
    if options.preset:
        preset = Preset.objects.filter(key=options.preset).first()
        if preset is None:
            raise Refusal(f"Unknown preset {options.preset!r}", field="Preset")
    request = jobs.JobRequest(
        owner=owner,
        api_key=api_key,
        model=options.model,
        prompt=options.prompt,
        preset=preset,
        tag=options.tag,
    )
    return jobs.validate(request), preset


def _size(item: BatchItem) -> int:
    if item.size is not None:
        return item.size
    source = item.open()
    size = getattr(source, "size", None)
    return int(size) if size is not None else source.seek(0, io.SEEK_END)


def _add_item(batch: Batch, spec: jobs.JobSpec, path: str, item: BatchItem) -> Job:
    """One item as a job: run, run appending to, or reusing the owner's earlier caption of the same image."""
    upload = _read(item)
    fields = {**spec.fields, "batch": batch, "path": path[:500]}
    earlier = None
    if batch.duplicates != Duplicates.AGAIN:
        earlier = _earlier_caption(batch, hashlib.sha256(upload.data).hexdigest(), fields)
    if earlier is None:
        return jobs.create_with_upload(jobs.JobSpec(fields), upload)
    if batch.duplicates == Duplicates.APPEND:
        return jobs.create_with_upload(jobs.JobSpec({**fields, "earlier_text": earlier.output}), upload)
    return _reused(fields, upload, earlier)


def _read(item: BatchItem) -> UploadedImage:
    """The item checked as an image; ImageRejected (a Refusal) if it is not one."""
    try:
        source = item.open()
        if isinstance(source, UploadedFile):
            return read_uploaded_file(source)
        with source:
            if source.seekable():
                source.seek(0)  # _size may have looked at its end
            data = source.read(Conf.MAX_UPLOAD_BYTES + 1)
    except OSError as error:
        raise ImageRejected(f"The file cannot be read ({error})") from error
    return read_upload(data)


def _earlier_caption(batch: Batch, sha256: str, fields: dict[str, Any]) -> Job | None:
    """The owner's latest Completed job of the same image, model, prompt and Florence task."""
    done = Job.objects.filter(owner=batch.owner, state=State.COMPLETED, image__sha256=sha256)
    same = done.filter(model=fields["model"], prompt=fields["prompt"], florence_task=fields["florence_task"])
    return same.exclude(batch=batch).order_by("-finished_at", "-pk").first()


def _reused(fields: dict[str, Any], upload: UploadedImage, earlier: Job) -> Job:
    """A job created already Completed with the earlier caption: no backend is asked."""
    now = timezone.now()
    with transaction.atomic():
        stored, _ = store_image(upload.data, upload.content_type, upload.width, upload.height)
        job = Job.objects.create(
            **fields,
            image=stored,
            state=State.COMPLETED,
            status=f"Reused the caption of job {earlier.pk}",
            output=earlier.output,
            started_at=now,
            finished_at=now,
        )
    transaction.on_commit(lambda: publish_change(job.pk, job.owner_id, job.state, created=True))
    return job


# --- following ----------------------------------------------------------------------------------


def caption(job: Job) -> str:
    """What the user keeps: their edit, else prefix + earlier caption + the model's text + suffix."""
    if job.edited_text is not None:
        return job.edited_text
    if job.state != State.COMPLETED:
        return ""
    batch = job.batch
    earlier = job.earlier_text + "\n" if job.earlier_text else ""
    if batch is None:
        return earlier + job.output
    return batch.prefix + earlier + job.output + batch.suffix


def counts(batch: Batch) -> dict[str, int]:
    """Items by state, in one query, with the total and the files skipped."""
    by_state = batch.jobs.aggregate(
        queued=Count("pk", filter=Q(state=State.QUEUED)),
        running=Count("pk", filter=Q(state=State.STARTED)),
        completed=Count("pk", filter=Q(state=State.COMPLETED)),
        failed=Count("pk", filter=Q(state=State.FAILED)),
        cancelled=Count("pk", filter=Q(state=State.CANCELLED)),
        total=Count("pk"),
    )
    return {**by_state, "skipped": len(batch.skipped)}


def progress(batch: Batch) -> dict[str, Any]:
    """counts, plus items ended per minute lately and the seconds left at that rate (None: unknown)."""
    now = timezone.now()
    numbers: dict[str, Any] = counts(batch)
    since = max(now - RATE_WINDOW, batch.created_at)
    minutes = max((now - since).total_seconds() / 60, 1 / 60)
    ended = batch.jobs.filter(state__in=FINISHED, finished_at__gte=since).count()
    rate = ended / minutes
    left = numbers["queued"] + numbers["running"]
    numbers["rate"] = round(rate, 2)
    numbers["secondsLeft"] = 0 if not left else (round(left / rate * 60) if rate else None)
    return numbers


def state(batch: Batch, numbers: dict[str, int]) -> str:
    """Queued until an item starts or ends, Running until every item ended, then Completed (or
    Cancelled when items were cancelled); failed items are counted, not a state of the batch."""
    if numbers["queued"] or numbers["running"]:
        return State.QUEUED if numbers["queued"] == numbers["total"] else "Running"
    return State.CANCELLED if numbers["cancelled"] else State.COMPLETED


def status_document(batch: Batch, skip: int = 0, take: int | None = None) -> dict[str, Any]:
    """The batch as GetBatchStatus answers and its callback sends it; items skip..skip+take in the order queued."""
    numbers = progress(batch)
    rows = batch.jobs.select_related("batch").order_by("pk")
    page = rows[skip : skip + take] if take is not None else rows[skip:]
    return {
        "batchId": batch.pk,
        "refId": batch.ref_id,
        "name": batch.name,
        "state": state(batch, numbers),
        "counts": {key: numbers[key] for key in ("queued", "running", "completed", "failed", "cancelled", "total")},
        "rate": numbers["rate"],
        "secondsLeft": numbers["secondsLeft"],
        "finished": batch.finished_at is not None,
        "skip": skip,
        "items": [_item(job) for job in page],
        "skipped": batch.skipped,
    }


def _item(job: Job) -> dict[str, Any]:
    return {
        "path": job.path,
        "jobId": job.pk,
        "jobState": job.state,
        "text": caption(job),
        "originalText": job.output,
        "edited": job.edited_text is not None,
        "error": job.error if job.state in {State.FAILED, State.CANCELLED} else "",
    }


# --- changing -----------------------------------------------------------------------------------


def edit_caption(job: Job, text: str) -> None:
    """Keep the user's caption beside the model's output, which stays as it was."""
    if len(text) > MAX_CAPTION_CHARS:
        raise Refusal(f"The caption is longer than {MAX_CAPTION_CHARS:,} characters", field="Caption")
    if "\x00" in text:
        raise Refusal("The caption must not contain NUL characters", field="Caption")
    Job.objects.filter(pk=job.pk).update(edited_text=text)
    job.edited_text = text
    transaction.on_commit(lambda: publish_change(job.pk, job.owner_id, job.state))


def retry_failed(batch: Batch) -> int:
    """Run the batch's failed items again; returns how many. The batch is unfinished until they end."""
    retried = 0
    for job in batch.jobs.filter(state=State.FAILED):
        with transaction.atomic():
            try:
                jobs.retry(job)
            except InvalidTransition:
                continue  # retried meanwhile
            Batch.objects.filter(pk=batch.pk).update(finished_at=None)
        retried += 1
    batch.refresh_from_db(fields=["finished_at"])
    return retried


def cancel_batch(batch: Batch) -> int:
    """Cancel every item that has not ended; returns how many."""
    return sum(jobs.cancel(job) for job in batch.jobs.active().order_by("pk"))


def job_ended(job: Job) -> None:
    """Called in the transaction that ends a batch's job: the batch's last item to end finishes it,
    once, and owes its callback. The batch row is locked first, so two items ending at once are
    counted one after the other (neither would see the other's end otherwise)."""
    _finish_if_ended(job.batch_id)


def _finish_if_ended(batch_id: int | None) -> None:
    if batch_id is None:
        return
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id, finished_at__isnull=True).first()
        if batch is None or not batch.total or batch.jobs.active().exists():
            return  # finished already, still being created, or items left
        Batch.objects.filter(pk=batch.pk, finished_at__isnull=True).update(finished_at=timezone.now())
        owe_batch(batch)


# --- export -------------------------------------------------------------------------------------


def export_rows(rows: QuerySet[Job]) -> Iterator[ExportRow]:
    """Jobs as dataset rows (a batch's, or any history search), their images opened only when written."""
    for job in rows.select_related("batch", "image").iterator(chunk_size=200):
        extension = job.image.extension if job.image else ".jpg"
        opener = partial(job.image.file.open, "rb") if job.image else None
        yield ExportRow(
            path=job.path or f"job-{job.pk}{extension}",
            open_image=opener,
            caption=caption(job),
            original_caption=job.output,
            model=job.model,
            prompt=job.prompt,
            state=job.state,
            duration=job.duration,
            job_id=job.pk,
        )


__all__ = [
    "BatchItem",
    "BatchOptions",
    "Limits",
    "cancel_batch",
    "caption",
    "counts",
    "create_batch",
    "edit_caption",
    "export_rows",
    "items_from_zip",
    "job_ended",
    "progress",
    "retry_failed",
    "status_document",
]

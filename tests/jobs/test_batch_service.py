"""The batch service the page and the API share: captions as kept, progress, the batch's end, exports."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone
from PIL import Image

from imagetotext import batches, jobs
from imagetotext.errors import Refusal
from imagetotext.models import Batch, CallbackDelivery, Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (index, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def items(count: int) -> list[batches.BatchItem]:
    return [batches.BatchItem(f"dir/{i}.png", lambda i=i: io.BytesIO(png(i))) for i in range(count)]


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs stay queued: nothing goes to the workers."""
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)


@pytest.fixture
def batch(api_user, ollama_agent, queued) -> Batch:
    options = batches.BatchOptions(model="llava:7b", prefix="pre ", suffix=" post", reply_to="http://example.com/done")
    return batches.create_batch(api_user, options, items(3))


def test_the_caption_kept_is_the_edit_else_prefix_earlier_text_output_suffix(batch: Batch) -> None:
    first, second, third = batch.jobs.order_by("pk")
    Job.objects.filter(pk=first.pk).update(state=State.COMPLETED, output="a cat")
    Job.objects.filter(pk=second.pk).update(state=State.COMPLETED, output="a dog", earlier_text="a pet")
    first.refresh_from_db()
    second.refresh_from_db()

    batches.edit_caption(third, "my own words")

    assert batches.caption(first) == "pre a cat post"
    assert batches.caption(second) == "pre a pet\na dog post"
    assert batches.caption(third) == "my own words"
    third.refresh_from_db()
    assert third.edited_text == "my own words" and third.output == ""


def test_an_unfinished_item_without_an_edit_has_no_caption(batch: Batch) -> None:
    assert [batches.caption(job) for job in batch.jobs.all()] == ["", "", ""]


def test_counts_and_progress_follow_the_items(batch: Batch) -> None:
    first, second, _ = batch.jobs.order_by("pk")
    minute_ago = timezone.now() - timedelta(minutes=1)
    Batch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(minutes=2))
    Job.objects.filter(pk=first.pk).update(state=State.COMPLETED, finished_at=minute_ago)
    Job.objects.filter(pk=second.pk).update(state=State.STARTED)
    batch.refresh_from_db()

    numbers = batches.progress(batch)

    assert {key: numbers[key] for key in ("queued", "running", "completed", "failed", "total")} == {
        "queued": 1,
        "running": 1,
        "completed": 1,
        "failed": 0,
        "total": 3,
    }
    assert numbers["rate"] == pytest.approx(0.5, abs=0.01)  # one item in two minutes
    assert numbers["secondsLeft"] == pytest.approx(240, abs=2)  # two left at that rate


def test_the_last_item_to_end_finishes_the_batch_once_and_owes_one_callback(batch: Batch) -> None:
    first, second, third = batch.jobs.order_by("pk")
    jobs.cancel(first)
    jobs.cancel(second)
    batch.refresh_from_db()
    assert batch.finished_at is None and not CallbackDelivery.objects.exists()

    jobs.cancel(third)
    batch.refresh_from_db()
    finished_at = batch.finished_at
    batches.job_ended(third)  # told twice: still once

    batch.refresh_from_db()
    assert finished_at is not None and batch.finished_at == finished_at
    assert CallbackDelivery.objects.filter(batch=batch).count() == 1
    assert not CallbackDelivery.objects.filter(job__batch=batch).exists()


def test_cancel_batch_cancels_what_has_not_ended(batch: Batch) -> None:
    first = batch.jobs.order_by("pk").first()
    assert first is not None
    Job.objects.filter(pk=first.pk).update(state=State.COMPLETED, output="done")

    cancelled = batches.cancel_batch(batch)

    assert cancelled == 2
    assert sorted(batch.jobs.values_list("state", flat=True)) == ["Cancelled", "Cancelled", "Completed"]


def test_a_job_without_a_path_is_exported_under_its_id(api_user, ollama_agent, queued) -> None:
    from imagetotext.images import read_upload

    spec = jobs.validate(jobs.JobRequest(owner=api_user, model="llava:7b"))
    job = jobs.create_with_upload(spec, read_upload(png(5)))
    Job.objects.filter(pk=job.pk).update(state=State.COMPLETED, output="red")

    [row] = batches.export_rows(Job.objects.filter(pk=job.pk))

    assert row.path == f"job-{job.pk}.png"
    assert row.caption == "red" and row.original_caption == "red"
    assert row.open_image is not None
    with row.open_image() as image:
        assert image.read() == png(5)


def test_a_refused_batch_leaves_nothing_behind(api_user, ollama_agent, queued, monkeypatch) -> None:
    monkeypatch.setattr(batches.Limits, "MAX_ITEMS", 2)

    with pytest.raises(Refusal, match="The batch holds 3 images; the limit is 2"):
        batches.create_batch(api_user, batches.BatchOptions(model="llava:7b"), items(3))

    assert not Batch.objects.exists() and not Job.objects.exists()


def test_reused_captions_finish_the_batch_at_once(api_user, ollama_agent, queued) -> None:
    first = batches.create_batch(api_user, batches.BatchOptions(model="llava:7b"), items(2))
    first.jobs.update(state=State.COMPLETED, output="known", finished_at=timezone.now())

    again = batches.create_batch(api_user, batches.BatchOptions(model="llava:7b", duplicates="reuse"), items(2))

    assert again.finished_at is not None
    assert [batches.caption(job) for job in again.jobs.all()] == ["known", "known"]


def test_an_item_whose_opener_returns_the_same_file_each_time_is_read_whole(api_user, ollama_agent, queued) -> None:
    shared = io.BytesIO(png(7))
    item = batches.BatchItem("same.png", lambda: shared)

    batch = batches.create_batch(api_user, batches.BatchOptions(model="llava:7b"), [item])

    job = batch.jobs.get()
    assert batch.skipped == [] and job.image is not None
    with job.image.file.open("rb") as stored:
        assert stored.read() == png(7)

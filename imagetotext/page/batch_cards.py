"""A batch's page in pieces: its progress, and one grid item per job; the views and the socket render them.

The grid is paged (ITEMS_PER_PAGE), so a batch of 1,000 images never sends 1,000 items at once:
the socket updates only the items of the page being looked at, and the progress bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.template.loader import render_to_string

from imagetotext import batches
from imagetotext.models import Batch, Job

ITEMS_PER_PAGE = 60
PROGRESS = "imagetotext/partials/batch_progress.html"
ITEM = "imagetotext/partials/batch_item.html"


@dataclass(frozen=True)
class Item:
    """One job of a batch as its grid shows it: the caption kept, and whether it is the user's edit."""

    job: Job
    caption: str

    @property
    def edited(self) -> bool:
        return self.job.edited_text is not None


@dataclass(frozen=True)
class Progress:
    """What the progress bar shows: the counts, the rate per minute and the time left."""

    batch: Batch
    numbers: dict[str, Any]

    @property
    def done(self) -> int:
        return int(self.numbers["completed"] + self.numbers["failed"] + self.numbers["cancelled"])

    @property
    def active(self) -> int:
        return int(self.numbers["queued"] + self.numbers["running"])

    @property
    def minutes_left(self) -> int | None:
        seconds = self.numbers["secondsLeft"]
        return None if seconds is None else max(1, round(seconds / 60))


def item(job: Job) -> Item:
    return Item(job, batches.caption(job))


def batch_jobs(batch: Batch) -> QuerySet[Job]:
    """The batch's jobs in the grid's order: by path, as the folder or the ZIP had them."""
    return batch.jobs.select_related("image", "batch").defer("result").order_by("path", "pk")


def grid_page(batch: Batch, number: Any) -> Page[Job]:
    return Paginator(batch_jobs(batch), ITEMS_PER_PAGE).get_page(number)


def progress(batch: Batch) -> Progress:
    return Progress(batch, batches.progress(batch))


def render_progress(batch: Batch) -> str:
    """The progress bar and the batch's actions, marked to replace the ones on the page."""
    batch.refresh_from_db(fields=["finished_at"])
    return render_to_string(PROGRESS, {"progress": progress(batch), "oob": True})


def render_item(job: Job, oob: bool = True, editing: bool = False, error: str = "") -> str:
    """One grid item; editing: with its caption in a text box, and why the last save was refused."""
    return render_to_string(ITEM, {"item": item(job), "oob": oob, "editing": editing or bool(error), "error": error})


def batch_for(user: Any, batch_id: int) -> Batch | None:
    return Batch.objects.filter(owner=user, pk=batch_id).first()


def visible_job_ids(batch: Batch, number: Any) -> set[int]:
    """The ids of the jobs on one page of the grid: the only items the socket updates."""
    return {job.pk for job in grid_page(batch, number)}


def batch_job_ids(batch: Batch) -> set[int]:
    return set(batch.jobs.values_list("pk", flat=True))

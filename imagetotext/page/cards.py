"""A job's card: the one partial the page, its htmx answers and the WebSocket all render.

Which cards a page shows, and what each needs besides the job (its place in the queue),
live here, so the consumer and the views share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from agents.clients.local import OCR_MODEL
from agents.models import Kind
from imagetotext.dispatch import queue_position
from imagetotext.models import FINISHED, Job, State, jobs_with_agent_and_image

CARDS_ON_PAGE = 20
# What a card or history row shows of a job's text; the job's own page shows all of it.
PREVIEW_CHARS = 4000
# Finished this recently, a job's card is resent when a socket (re)connects.
RESYNC_FINISHED_WITHIN = timedelta(minutes=10)
CARD = "imagetotext/partials/job_card.html"
NEW_CARD = "imagetotext/partials/new_card.html"
TEXT = "imagetotext/partials/job_text.html"


@dataclass(frozen=True)
class Card:
    """A job with what its card shows beyond the job itself."""

    job: Job
    position: int | None = None
    notice: str = ""
    full: bool = False  # on the job's own page: all of its text

    @property
    def text(self) -> str:
        """The job's text as the card shows it: the start only, so a long answer keeps the page small."""
        return preview(self.job.output) + "…" if self.cut else self.job.output

    @property
    def cut(self) -> bool:
        """True when the card shows only the start; copying then fetches the whole text."""
        return not self.full and len(self.job.output) > PREVIEW_CHARS

    @property
    def lines(self) -> bool:
        """True for text read off the image (OCR, a Florence-2 task): shown line for line, not as Markdown."""
        job = self.job
        on_local_ocr = job.agent is not None and job.agent.kind == Kind.LOCAL
        return bool(job.florence_task) or on_local_ocr or job.model == OCR_MODEL

    @property
    def empty(self) -> bool:
        """A finished job that found no text: the card says so instead of showing nothing."""
        return self.job.state == State.COMPLETED and not self.job.output.strip()

    @property
    def waited(self) -> float | None:
        """Seconds the job waited in the queue before its last start."""
        if not self.job.started_at:
            return None
        return max(0.0, (self.job.started_at - self.job.queued_at).total_seconds())


def preview(text: str) -> str:
    """The start of text, cut after a word where there is one near the limit."""
    if len(text) <= PREVIEW_CHARS:
        return text
    start = text[:PREVIEW_CHARS]
    space = start.rfind(" ", PREVIEW_CHARS - 200)
    return start[:space] if space > 0 else start


def card(job: Job, notice: str = "", full: bool = False) -> Card:
    waiting = job.state == State.QUEUED and job.agent_id is None
    return Card(job, queue_position(job) if waiting else None, notice, full)


def render_card(job: Job, notice: str = "", full: bool = False) -> str:
    """The card, marked to replace the one with its id (an out-of-band swap)."""
    return render_to_string(CARD, {"card": card(job, notice, full), "oob": True})


def render_new_card(job: Job) -> str:
    """The card of a job just made, to go on top of the page's list."""
    return render_to_string(NEW_CARD, {"card": card(job)})


def render_text(job_id: int, text: str, full: bool = False) -> str:
    """The streaming text area of a running job's card (its start, unless on the job's own page)."""
    shown = text if full else preview(text)
    return render_to_string(TEXT, {"job_id": job_id, "text": shown, "cut": len(shown) < len(text)})


def users_jobs(user: Any) -> QuerySet[Job]:
    return Job.objects.owned_by(user).select_related("image", "agent")


def single_jobs(user: Any) -> QuerySet[Job]:
    """The jobs the page shows as cards: a batch's are followed on the batch's own page, so a
    ZIP of 1,000 images never sends 1,000 cards here."""
    return users_jobs(user).filter(batch__isnull=True)


def latest_cards(user: Any) -> list[Card]:
    """What the page lists: the user's newest single jobs, newest first."""
    return [card(job) for job in single_jobs(user)[:CARDS_ON_PAGE]]


def job_for(user: Any, job_id: int) -> Job | None:
    """The user's job, or None when it is not theirs or is gone."""
    found = jobs_with_agent_and_image([job_id], owner_id=user.pk)  # for every live update: written once
    return found[0] if found else None


def resync_jobs(user: Any) -> list[Job]:
    """The user's unfinished and recently finished single jobs: what a reconnecting page may have missed."""
    recent = Q(finished_at__gte=timezone.now() - RESYNC_FINISHED_WITHIN)
    return list(single_jobs(user).filter(~Q(state__in=FINISHED) | recent))

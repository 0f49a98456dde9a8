"""The page's live updates: a signed-in user's job cards over a WebSocket.

Workers publish one small event per change to the owner's group; this consumer renders
the card partial for it and sends it for htmx's ws extension to swap in: a new job's card
goes on top of the list, a changed job's card replaces the one with its id. The job page
connects with ?job=<id> and hears only about that job. A batch's page connects with
?batch=<id>&page=<n>: it hears about the items on that page of its grid, and gets the progress
bar again at most every PROGRESS_SECONDS, however many of the batch's jobs change.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from imagetotext.live import user_group
from imagetotext.models import Batch
from imagetotext.page import batch_cards, cards

UNAUTHENTICATED = 4401
NOT_FOUND = 4404
PROGRESS_SECONDS = 0.25


class JobsConsumer(AsyncWebsocketConsumer):
    """Resends what may have changed on connect, then each card as its job changes."""

    group = ""
    only_job: int | None = None
    batch: Batch | None = None
    batch_jobs: frozenset[int] = frozenset()
    visible: frozenset[int] = frozenset()
    progress_dirty = False
    progress_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        query = self.scope.get("query_string", b"")
        self.only_job = id_in_query(query, "job")
        if (batch_id := id_in_query(query, "batch")) is not None:
            if not await database_sync_to_async(self.follow_batch)(user, batch_id, id_in_query(query, "page") or 1):
                await self.close(code=NOT_FOUND)
                return
        # Join before reading the database, so no change falls between the two.
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if resent := await database_sync_to_async(self.resync)(user):
            await self.send(text_data=resent)

    def follow_batch(self, user: Any, batch_id: int, page: int) -> bool:
        """Listen for this batch's jobs, and those on the page of its grid shown; False if not the user's."""
        self.batch = batch_cards.batch_for(user, batch_id)
        if self.batch is None:
            return False
        self.batch_jobs = frozenset(batch_cards.batch_job_ids(self.batch))
        self.visible = frozenset(batch_cards.visible_job_ids(self.batch, page))
        return True

    def resync(self, user: Any) -> str:
        """The cards of jobs that may have changed since the page was rendered, each replacing its own."""
        if self.batch is not None:
            return self.resync_batch()
        jobs = [job for job in cards.resync_jobs(user) if self.wants(job.pk)]
        return "".join(cards.render_card(job, full=self.only_job is not None) for job in jobs)

    def resync_batch(self) -> str:
        assert self.batch is not None
        items = batch_cards.batch_jobs(self.batch).filter(pk__in=self.visible)
        return batch_cards.render_progress(self.batch) + "".join(batch_cards.render_item(job) for job in items)

    def wants(self, job_id: int) -> bool:
        if self.batch is not None:
            return job_id in self.visible
        return self.only_job is None or self.only_job == job_id

    async def disconnect(self, code: int) -> None:
        if self.progress_task is not None:
            self.progress_task.cancel()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing that needs an answer."""

    async def job_changed(self, event: dict[str, Any]) -> None:
        if self.batch is not None and event["job_id"] in self.batch_jobs:
            self.progress_changed()
        if not self.wants(event["job_id"]):
            return
        if html := await database_sync_to_async(self.render)(event["job_id"], event.get("created", False)):
            await self.send(text_data=html)

    def progress_changed(self) -> None:
        """Send the progress bar again soon; changes meanwhile are taken in by the same one."""
        self.progress_dirty = True
        if self.progress_task is None or self.progress_task.done():
            self.progress_task = asyncio.create_task(self.send_progress())

    async def send_progress(self) -> None:
        assert self.batch is not None
        while self.progress_dirty:
            await asyncio.sleep(PROGRESS_SECONDS)
            self.progress_dirty = False  # before reading: a change from now on is read next time
            await self.send(text_data=await database_sync_to_async(batch_cards.render_progress)(self.batch))

    def render(self, job_id: int, created: bool) -> str:
        if self.batch is not None:
            item = batch_cards.batch_jobs(self.batch).filter(pk=job_id).first()
            return batch_cards.render_item(item) if item is not None else ""
        job = cards.job_for(self.scope["user"], job_id)
        if job is None or (job.batch_id is not None and self.only_job is None):
            return ""  # a batch's jobs show on the batch's page, not as cards here
        # A new card is added only to the list page; the job page shows its one job, all of its text.
        if self.only_job is not None:
            return cards.render_card(job, full=True)
        return cards.render_new_card(job) if created else cards.render_card(job)

    async def job_text(self, event: dict[str, Any]) -> None:
        if self.batch is None and self.wants(event["job_id"]):
            await self.send(text_data=cards.render_text(event["job_id"], event["text"], self.only_job is not None))


def id_in_query(query_string: bytes, name: str) -> int | None:
    """The id in ?<name>=<id>, or None when it is not there (or is not an id)."""
    values = parse_qs(query_string.decode("latin-1")).get(name, [])
    value = values[0] if values else ""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None

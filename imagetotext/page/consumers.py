"""The page's live updates: a signed-in user's job cards over a WebSocket.

Workers publish one small event per change to the owner's group; this consumer renders
the card partial for it and sends it for htmx's ws extension to swap in: a new job's card
goes on top of the list, a changed job's card replaces the one with its id. The job page
connects with ?job=<id> and hears only about that job.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from imagetotext.live import user_group
from imagetotext.page import cards

UNAUTHENTICATED = 4401


class JobsConsumer(AsyncWebsocketConsumer):
    """Resends what may have changed on connect, then each card as its job changes."""

    group = ""
    only_job: int | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.only_job = job_in_query(self.scope.get("query_string", b""))
        # Join before reading the database, so no change falls between the two.
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if resent := await database_sync_to_async(self.resync)(user):
            await self.send(text_data=resent)

    def resync(self, user: Any) -> str:
        """The cards of jobs that may have changed since the page was rendered, each replacing its own."""
        jobs = [job for job in cards.resync_jobs(user) if self.wants(job.pk)]
        return "".join(cards.render_card(job, full=self.only_job is not None) for job in jobs)

    def wants(self, job_id: int) -> bool:
        return self.only_job is None or self.only_job == job_id

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing that needs an answer."""

    async def job_changed(self, event: dict[str, Any]) -> None:
        if not self.wants(event["job_id"]):
            return
        if html := await database_sync_to_async(self.render)(event["job_id"], event.get("created", False)):
            await self.send(text_data=html)

    def render(self, job_id: int, created: bool) -> str:
        job = cards.job_for(self.scope["user"], job_id)
        if job is None:
            return ""
        # A new card is added only to the list page; the job page shows its one job, all of its text.
        if self.only_job is not None:
            return cards.render_card(job, full=True)
        return cards.render_new_card(job) if created else cards.render_card(job)

    async def job_text(self, event: dict[str, Any]) -> None:
        if self.wants(event["job_id"]):
            await self.send(text_data=cards.render_text(event["job_id"], event["text"], self.only_job is not None))


def job_in_query(query_string: bytes) -> int | None:
    """The job id in ?job=<id>, or None for the list page (or a value that is not an id)."""
    values = parse_qs(query_string.decode("latin-1")).get("job", [])
    return int(values[0]) if values and values[0].isascii() and values[0].isdigit() else None

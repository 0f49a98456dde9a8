"""The page's live updates: a signed-in user's job cards over a WebSocket.

Workers publish small events to the owner's group; this consumer renders the
same partials the page uses and sends them for htmx's ws extension to swap by id.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from imagetotext.live import user_group
from imagetotext.views import card_for, current_cards, render_text

UNAUTHENTICATED = 4401


class JobsConsumer(AsyncWebsocketConsumer):
    """Sends the current cards on connect, then each card as its job changes."""

    group = ""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        # Join before reading the database, so no change falls between the two.
        self.group = user_group(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if cards := await database_sync_to_async(current_cards)(user):
            await self.send(text_data=cards)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page sends nothing that needs an answer."""

    async def job_changed(self, event: dict[str, Any]) -> None:
        if card := await database_sync_to_async(card_for)(self.scope["user"], event["job_id"]):
            await self.send(text_data=card)

    async def job_text(self, event: dict[str, Any]) -> None:
        await self.send(text_data=render_text(event["job_id"], event["text"]))

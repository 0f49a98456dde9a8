"""A test-only ASGI app: a WebSocket at /ws/probe/<group>/ that relays the group.

The cross-process test serves this with daphne, so that what it proves is the
channel layer from the real settings, not the project's own pages.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiserver.settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class ProbeConsumer(AsyncWebsocketConsumer):
    """Joins the group named in the URL and forwards each probe.message as text."""

    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["group"]
        # Join before accepting: once the client's handshake completes, a
        # message published to the group cannot be missed.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def probe_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/probe/<str:group>/", ProbeConsumer.as_asgi())])})

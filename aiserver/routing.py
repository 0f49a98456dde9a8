"""WebSocket routes: the live job cards of the Image to Text page."""

from __future__ import annotations

from django.urls import URLPattern, path

from imagetotext.page.consumers import JobsConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/jobs/", JobsConsumer.as_asgi()),
]

"""WebSocket routes. The live job updates of the page are added here."""

from __future__ import annotations

from django.urls import URLPattern

websocket_urlpatterns: list[URLPattern] = []

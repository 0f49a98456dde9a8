"""The API's own description; included under api/ next to the API routes."""

from __future__ import annotations

from django.urls import path

from imagetotext import docs

urlpatterns = [
    path("openapi.json", docs.openapi_json, name="openapi-json"),
    path("docs", docs.api_docs, name="api-docs"),
]

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from aiserver import health, metrics
from imagetotext import overview

handler404 = "aiserver.views.not_found"
handler500 = "aiserver.views.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/ImageToText", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/overview/", overview.overview, name="admin-overview"),
    path("admin/", admin.site.urls),
    path("api/", include("imagetotext.api.urls")),
    path("v1/", include("imagetotext.api.openai_urls")),
    path("", include("imagetotext.page.urls")),
]

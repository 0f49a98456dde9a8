from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

handler500 = "aiserver.views.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/ImageToText", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("imagetotext.api.urls")),
    path("", include("imagetotext.page.urls")),
]

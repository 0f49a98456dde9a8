from __future__ import annotations

from django.urls import path

from imagetotext import views

urlpatterns = [
    path("ImageToText", views.page, name="image-to-text"),
]

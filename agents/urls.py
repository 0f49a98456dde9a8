from __future__ import annotations

from django.urls import path

from agents import views

urlpatterns = [
    path("ActiveAiModels", views.active_ai_models, name="active-ai-models"),
]

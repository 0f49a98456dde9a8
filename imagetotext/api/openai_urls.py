"""Every /v1/ route: OpenAI's API, for OpenAI clients pointed at this server."""

from __future__ import annotations

from django.urls import path

from imagetotext.api import model_listing, openai_chat

urlpatterns = [
    path("models", model_listing.openai_models, name="openai-models"),
    path("models/<path:model>", model_listing.openai_model_detail, name="openai-model"),
    path("chat/completions", openai_chat.chat_completions, name="openai-chat-completions"),
]

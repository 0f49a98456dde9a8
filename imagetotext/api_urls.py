"""Routes of the JSON API, at AI Server's paths (/api/{RequestDtoName})."""

from __future__ import annotations

from django.urls import path

from imagetotext import api, ollama_api

urlpatterns = [
    path("ImageToText", api.image_to_text, name="image-to-text-api"),
    path("QueueImageToText", api.queue_image_to_text, name="queue-image-to-text"),
    path("GetTextGenerationStatus", api.get_text_generation_status, name="get-text-generation-status"),
    path("OllamaGeneration", ollama_api.ollama_generation, name="ollama-generation"),
    path("generate", ollama_api.ollama_generation, name="ollama-generate"),
    path("QueueOllamaGeneration", ollama_api.queue_ollama_generation, name="queue-ollama-generation"),
    path("GetOllamaGenerationStatus", ollama_api.get_ollama_generation_status, name="get-ollama-generation-status"),
]

"""Every /api/ route: AI Server's paths (/api/{RequestDtoName}), Ollama's, and the API's own docs."""

from __future__ import annotations

from django.urls import path

from imagetotext.api import active_models, batches, docs, image_to_text, model_listing, ollama_chat, ollama_compat

urlpatterns = [
    path("ImageToText", image_to_text.image_to_text, name="image-to-text-api"),
    path("QueueImageToText", image_to_text.queue_image_to_text, name="queue-image-to-text"),
    path("GetTextGenerationStatus", image_to_text.get_text_generation_status, name="get-text-generation-status"),
    path("OllamaGeneration", ollama_compat.ollama_generation, name="ollama-generation"),
    path("generate", ollama_compat.ollama_generation, name="ollama-generate"),
    path("chat", ollama_chat.ollama_chat, name="ollama-chat"),
    path("QueueOllamaGeneration", ollama_compat.queue_ollama_generation, name="queue-ollama-generation"),
    path("GetOllamaGenerationStatus", ollama_compat.get_ollama_generation_status, name="get-ollama-generation-status"),
    path("tags", model_listing.tags, name="ollama-tags"),
    path("show", model_listing.show, name="ollama-show"),
    path("ps", model_listing.ps, name="ollama-ps"),
    path("version", model_listing.version, name="ollama-version"),
    path("QueueImageToTextBatch", batches.queue_image_to_text_batch, name="queue-image-to-text-batch"),
    path("GetBatchStatus", batches.get_batch_status, name="get-batch-status"),
    path("CancelBatch", batches.cancel_batch, name="cancel-batch"),
    path("RetryBatch", batches.retry_batch, name="retry-batch"),
    path("UpdateBatchCaption", batches.update_batch_caption, name="update-batch-caption"),
    path("GetBatchExport", batches.get_batch_export, name="get-batch-export"),
    path("ActiveAiModels", active_models.active_ai_models, name="active-ai-models"),
    path("openapi.json", docs.openapi_json, name="openapi-json"),
    path("docs", docs.api_docs, name="api-docs"),
]

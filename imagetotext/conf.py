"""Every tunable of the image-to-text pipeline, read once from settings.

The rest of the code reads Conf.X (django-q2's habit), so limits and timeouts
live in one place and tests can change them with monkeypatch.
"""

from __future__ import annotations

from django.conf import settings


class Conf:
    # Uploads
    MAX_UPLOAD_BYTES: int = getattr(settings, "IMAGE_MAX_BYTES", 20 * 1024 * 1024)
    MAX_PIXELS: int = getattr(settings, "IMAGE_MAX_PIXELS", 50_000_000)
    # Longest side sent to a backend; OCR keeps more detail.
    RESIZE_LONGEST_SIDE: int = getattr(settings, "IMAGE_LONGEST_SIDE", 1024)
    OCR_LONGEST_SIDE: int = getattr(settings, "IMAGE_OCR_LONGEST_SIDE", 2048)
    # Photos go to backends as JPEG; 90 keeps fine detail at a third of PNG's size.
    JPEG_QUALITY: int = 90
    # Page thumbnails are WebP: smaller than JPEG at the same look.
    THUMBNAIL_QUALITY: int = 80

    # Jobs
    MAX_ATTEMPTS: int = getattr(settings, "JOB_MAX_ATTEMPTS", 3)
    SYNC_WAIT_SECONDS: float = getattr(settings, "SYNC_WAIT_SECONDS", 300)
    # A queued job whose model no online agent offers fails after this long.
    QUEUE_WAIT_SECONDS: int = getattr(settings, "QUEUE_WAIT_SECONDS", 900)
    DEFAULT_PROMPT: str = "Describe this image."
    DEFAULT_FLORENCE_MODEL: str = "microsoft/Florence-2-base"
    DEFAULT_FLORENCE_TASK: str = "more_detailed_caption"

    # Backends
    CONNECT_TIMEOUT: float = getattr(settings, "AGENT_CONNECT_TIMEOUT", 10)
    READ_TIMEOUT: float = getattr(settings, "AGENT_READ_TIMEOUT", 600)
    # How often streamed text is published while a model writes.
    STREAM_PUBLISH_SECONDS: float = 0.15

    # API requests per minute for each key or signed-in user; 0 switches the limit off.
    RATE_LIMIT_PER_MINUTE: int = getattr(settings, "API_RATE_LIMIT_PER_MINUTE", 600)

    # Callbacks
    CALLBACK_ATTEMPTS: int = getattr(settings, "CALLBACK_ATTEMPTS", 5)
    CALLBACK_BACKOFF_SECONDS: float = getattr(settings, "CALLBACK_BACKOFF_SECONDS", 2.0)
    CALLBACK_TIMEOUT: float = getattr(settings, "CALLBACK_TIMEOUT", 10)
    CALLBACK_ALLOW_PRIVATE: bool = getattr(settings, "CALLBACK_ALLOW_PRIVATE", False)
    CALLBACK_SECRET: str = getattr(settings, "CALLBACK_SECRET", settings.SECRET_KEY)
    CALLBACK_SIGNATURE_HEADER: str = "X-Signature-256"

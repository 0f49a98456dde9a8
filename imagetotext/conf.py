"""Every tunable of the image-to-text pipeline in one class (django-q2's habit).

Knobs the README lists are read from the environment once, in aiserver/settings.py; the
rest are constants. The code reads Conf.X, so tests can change them with monkeypatch.
"""

from __future__ import annotations

from django.conf import settings


class Conf:
    # Uploads
    MAX_UPLOAD_BYTES: int = settings.IMAGE_MAX_BYTES
    MAX_PIXELS: int = settings.IMAGE_MAX_PIXELS
    # Longest side sent to a backend; OCR keeps more detail.
    RESIZE_LONGEST_SIDE: int = 1024
    OCR_LONGEST_SIDE: int = 2048
    # Photos go to backends as JPEG; 90 keeps fine detail at a third of PNG's size.
    JPEG_QUALITY: int = 90
    # Page thumbnails are WebP: smaller than JPEG at the same look.
    THUMBNAIL_QUALITY: int = 80

    # Jobs
    MAX_ATTEMPTS: int = 3
    # How long a job's agent slot stays held after its process last renewed it (it renews every
    # third of this, so a dead process's jobs are taken up again within about this long).
    LEASE_SECONDS: float = settings.JOB_LEASE_SECONDS
    # An assigned job whose worker never started it is assigned again after this long.
    ASSIGNED_LEASE_SECONDS: float = max(settings.JOB_LEASE_SECONDS * 2, 10)
    MAX_OUTPUT_CHARS: int = settings.OUTPUT_MAX_CHARS
    JOBS_PER_WORKER: int = settings.JOBS_PER_WORKER
    # Threads per process that do the database work of requests and jobs, each keeping its
    # connection (so also the most connections a process holds, but for rare paths).
    DB_THREADS: int = 6
    SYNC_WAIT_SECONDS: float = settings.SYNC_WAIT_SECONDS
    # A queued job whose model no online agent offers fails after this long.
    QUEUE_WAIT_SECONDS: int = settings.QUEUE_WAIT_SECONDS
    DEFAULT_PROMPT: str = "Describe this image."
    # The most images one request (a generate, a chat) may carry; Job.image_count is a small integer.
    MAX_IMAGES_PER_REQUEST: int = 16
    # How long a process keeps its answer to "which model is this, and does an online agent
    # offer it" (its own agent changes are seen at once; other processes' within this time).
    MODEL_LOOKUP_SECONDS: float = 1.0
    DEFAULT_FLORENCE_MODEL: str = "microsoft/Florence-2-base"

    # API requests per minute for each key or signed-in user; 0 switches the limit off.
    RATE_LIMIT_PER_MINUTE: int = settings.API_RATE_LIMIT_PER_MINUTE

    # Callbacks
    CALLBACK_ATTEMPTS: int = 5
    CALLBACK_BACKOFF_SECONDS: float = 2.0
    CALLBACK_TIMEOUT: float = 10
    CALLBACK_ALLOW_PRIVATE: bool = settings.CALLBACK_ALLOW_PRIVATE
    CALLBACK_SECRET: str = settings.CALLBACK_SECRET
    CALLBACK_SIGNATURE_HEADER: str = "X-Signature-256"
    # /v1/chat/completions fetches http(s) image URLs only when allowed, with the callbacks' guard.
    OPENAI_IMAGE_URLS: bool = settings.OPENAI_IMAGE_URLS

    # Retention: finished jobs older than this many days are deleted daily (0: never).
    RETENTION_DAYS: int = settings.RETENTION_DAYS

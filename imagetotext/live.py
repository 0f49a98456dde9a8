"""Live updates: every state change and streamed text goes out on the channel layer.

Two groups per job: the owner's (the page shows all of a user's cards) and the
job's own (an API client streaming one generation listens there).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"jobs.user.{user_id}"


def job_group(job_id: int) -> str:
    return f"jobs.job.{job_id}"


def publish_change(job_id: int, owner_id: int, state: str) -> None:
    """Tell listeners the job changed; they read its current state from the database."""
    send(job_id, owner_id, {"type": "job.changed", "job_id": job_id, "state": state})


def publish_text(job_id: int, owner_id: int, text: str) -> None:
    """Send the text so far while a model is still writing."""
    send(job_id, owner_id, {"type": "job.text", "job_id": job_id, "text": text})


def send(job_id: int, owner_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(user_group(owner_id), message)
        async_to_sync(layer.group_send)(job_group(job_id), message)
    except Exception:  # noqa: BLE001 - a lost live update must never fail a job
        log.exception("Could not publish an update of job %s", job_id)

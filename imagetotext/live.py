"""Live updates: every state change and streamed text goes out on the channel layer.

Two groups per job: the owner's (the page shows all of a user's cards) and the
job's own (an API client streaming one generation listens there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from imagetotext.models import Job

log = logging.getLogger(__name__)
# A waiting request reads the job again this often even if no update reached it.
RECHECK_SECONDS = 5.0


def user_group(user_id: int) -> str:
    return f"jobs.user.{user_id}"


def job_group(job_id: int) -> str:
    return f"jobs.job.{job_id}"


def publish_change(job_id: int, owner_id: int, state: str, created: bool = False) -> None:
    """Tell listeners the job changed (or was just created); they read its state from the database."""
    send(job_id, owner_id, {"type": "job.changed", "job_id": job_id, "state": state, "created": created})


def publish_text(job_id: int, owner_id: int, text: str) -> None:
    """Send the text so far while a model is still writing."""
    send(job_id, owner_id, {"type": "job.text", "job_id": job_id, "text": text})


def send(job_id: int, owner_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        # One hop into async code for both groups: each async_to_sync call costs a loop switch.
        async_to_sync(send_to_groups)(layer, [user_group(owner_id), job_group(job_id)], message)
    except Exception:  # noqa: BLE001 - a lost live update must never fail a job
        log.exception("Could not publish an update of job %s", job_id)


async def send_to_groups(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    for group in groups:
        await layer.group_send(group, message)


async def wait_until_finished(job_id: int, seconds: float) -> Job:
    """The job once it has finished, or as it is after `seconds`; woken by its live updates, not a poll.

    The database is read when the job announces a change (and every RECHECK_SECONDS in case an
    update was lost), never in a tight loop.
    """
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(job_group(job_id), channel)
    deadline = time.monotonic() + seconds
    try:
        while True:
            job = await Job.objects.select_related("agent").aget(pk=job_id)
            left = deadline - time.monotonic()
            if job.finished or left <= 0:
                return job
            await next_change(layer, channel, min(left, RECHECK_SECONDS))
    finally:
        await layer.group_discard(job_group(job_id), channel)


async def next_change(layer: Any, channel: str, seconds: float) -> None:
    """Return at the job's next change of state (its text updates are skipped), or after `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=left)
        except TimeoutError:
            return
        if message.get("type") == "job.changed":
            return

"""Live updates: every state change and streamed text goes out on the channel layer.

Two groups per job: the owner's (the page shows all of a user's cards) and the
job's own (an API client streaming one generation listens there).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from typing import Any

from channels.layers import get_channel_layer

from imagetotext.db_threads import arun
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
    if get_channel_layer() is not None:
        publisher.put([user_group(owner_id), job_group(job_id)], message)


async def send_to_groups(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    for group in groups:
        await layer.group_send(group, message)


class Publisher:
    """Sends live updates from a thread and event loop of its own, in the order they were made.

    A job's thread or a request hands an update over and goes on at once: sending costs a
    round trip to Redis or a write to the SQLite layer, and an async_to_sync hop onto the web
    process's loop made the sender wait behind every request that loop was serving. One
    queue keeps the updates of a job in order. Made anew in a forked child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[list[str], dict[str, Any]]] | None = None
        self._pending = 0  # put but not yet sent; read by flush()
        self._idle = threading.Condition(self._lock)

    def put(self, groups: list[str], message: dict[str, Any]) -> None:
        with self._lock:
            loop, queue = self._started()
            self._pending += 1
        loop.call_soon_threadsafe(queue.put_nowait, (groups, message))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every update put so far was sent; False if that took longer than timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0 or self._pid != os.getpid(), timeout)

    def _started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[list[str], dict[str, Any]]]]:
        if self._pid != os.getpid() or self._loop is None or self._queue is None:
            ready = threading.Event()
            threading.Thread(target=self._run, args=(ready,), name="live-publisher", daemon=True).start()
            ready.wait()
            self._pid, self._pending = os.getpid(), 0
        assert self._loop is not None and self._queue is not None
        return self._loop, self._queue

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
        ready.set()
        while True:
            groups, message = await self._queue.get()
            try:
                await send_to_groups(get_channel_layer(), groups, message)
            except Exception:  # noqa: BLE001 - a lost live update must never fail a job
                log.exception("Could not publish an update of job %s", message.get("job_id"))
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()


publisher = Publisher()
atexit.register(publisher.flush, 2.0)  # what a finishing process published still goes out


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
            job = await arun(Job.objects.select_related("agent").get, pk=job_id)
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

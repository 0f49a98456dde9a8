"""A job's text as the backend writes it, for the routes that stream it in their own shape
(Ollama's NDJSON lines, OpenAI's server-sent events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer

from imagetotext.db_threads import arun
from imagetotext.live import RECHECK_SECONDS, job_group
from imagetotext.models import Job
from imagetotext.tasks import run_for_request


class TextFeed:
    """Iterate for each new piece of the job's text; afterwards `job` is the job as it ended and
    `sent` the text the pieces made up (the job's output may hold more, or other text, if it
    moved to another agent: see rest()).

    A job that got an agent as it was created runs here and each chunk the backend sends is its
    own piece; any other (or one that moved on) is followed while a worker runs it, woken by its
    live updates.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.sent = ""

    async def __aiter__(self) -> AsyncIterator[str]:
        if self.job.runs_here:
            async for piece in self._run_here():
                yield piece
            if self.job.finished:
                return
        async for piece in self._follow():
            yield piece

    def rest(self) -> str:
        """The finished job's text not yet sent as a piece (all of it if the pieces were of another run)."""
        output = self.job.output
        return output[len(self.sent) :] if output.startswith(self.sent) else output

    async def _run_here(self) -> AsyncIterator[str]:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def relay(piece: str) -> None:  # called on the job's thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        running = asyncio.ensure_future(run_for_request(self.job, relay))
        running.add_done_callback(lambda _: pieces.put_nowait(None))
        while (piece := await pieces.get()) is not None:
            self.sent += piece
            yield piece
        ran = running.result()  # a crash of the runner surfaces here rather than as a silent stop
        if ran is not None:
            self.job = ran

    async def _follow(self) -> AsyncIterator[str]:
        """The text as a worker's model writes it; the database is read only when the job changed
        state (or every RECHECK_SECONDS, in case an update was lost)."""
        layer = get_channel_layer()
        channel = await layer.new_channel()
        job_id = self.job.pk
        await layer.group_add(job_group(job_id), channel)
        try:
            self.job = await arun(Job.objects.get, pk=job_id)
            while not self.job.finished:
                event = await next_event(layer, channel)
                if event is not None and event.get("type") == "job.text":
                    text = event.get("text", "")
                    if text.startswith(self.sent) and len(text) > len(self.sent):
                        piece, self.sent = text[len(self.sent) :], text
                        yield piece
                    continue
                self.job = await arun(Job.objects.get, pk=job_id)
        finally:
            await layer.group_discard(job_group(job_id), channel)


async def next_event(layer: Any, channel: str) -> dict[str, Any] | None:
    """The next live update, or None after RECHECK_SECONDS without one."""
    try:
        return await asyncio.wait_for(layer.receive(channel), timeout=RECHECK_SECONDS)
    except TimeoutError:
        return None

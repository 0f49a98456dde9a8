"""Downloads of captions from the page: a batch's, or a history search's, as a ZIP, CSV or JSONL.

The export is a sync generator (database rows, image files); under ASGI Django would read a
sync iterator whole into a list before sending it, so it runs on a thread of its own and is
handed over chunk by chunk through a small queue: never more than a few chunks in memory.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.http import HttpResponse, StreamingHttpResponse

from imagetotext import batches, dataset
from imagetotext.models import Job

FORMATS = {
    "zip": (dataset.export_zip, "application/zip"),
    "csv": (dataset.export_csv, "text/csv; charset=utf-8"),
    "jsonl": (dataset.export_jsonl, "application/jsonl; charset=utf-8"),
}
QUEUED_CHUNKS = 8
PUT_WAIT_SECONDS = 0.5
_DONE = object()


def export_response(jobs: QuerySet[Job], format: str, name: str) -> HttpResponse | StreamingHttpResponse:
    """The jobs' captions streamed in the format asked for (zip, csv or jsonl), as an attachment."""
    if format not in FORMATS:
        return HttpResponse("Choose format=zip, csv or jsonl.", status=400, content_type="text/plain; charset=utf-8")
    write, content_type = FORMATS[format]
    chunks: Iterable[Any] = write(batches.export_rows(jobs))
    response = StreamingHttpResponse(streamed(iter(chunks)), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}.{format}"'
    response["Cache-Control"] = "private, no-cache"
    return response


async def streamed(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    """The chunks of a sync iterator, made on a thread of its own; stopping early stops it too."""
    handover: queue.Queue[Any] = queue.Queue(QUEUED_CHUNKS)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(chunks, handover, stop), name="export", daemon=True)
    thread.start()
    try:
        while (chunk := await asyncio.to_thread(handover.get)) is not _DONE:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        stop.set()  # the client went away, or the export failed: the thread ends at its next chunk


def _produce(chunks: Iterator[Any], handover: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        for chunk in chunks:
            if not _put(handover, chunk, stop):
                return
        _put(handover, _DONE, stop)
    except Exception as error:  # noqa: BLE001 - handed to the reader, which raises it
        _put(handover, error, stop)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        connections.close_all()  # this thread's own connection


def _put(handover: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Wait for room in the queue until the reader stops; False once it has."""
    while not stop.is_set():
        try:
            handover.put(item, timeout=PUT_WAIT_SECONDS)
            return True
        except queue.Full:
            continue
    return False

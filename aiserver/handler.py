"""Django's ASGI handler, with each request's sync thread reused instead of started for it."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

# Idle request threads kept for the next requests; a burst beyond this starts (and ends) its own.
KEPT_IDLE = 64


class ReusedThreadsASGIHandler(ASGIHandler):
    """Each request still runs its sync code (signals, sync views, the session) on one thread of
    its own, but the thread is taken from the ones earlier requests left idle.

    Django's handler enters a fresh ThreadSensitiveContext per request, so asgiref starts a
    thread for the request's first sync call and one more to join it at the end: two thread
    starts per request, a few milliseconds of the event loop's time under load. asgiref lets
    the caller own the executor instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            await self._release(executor)

    async def _release(self, executor: ThreadPoolExecutor) -> None:
        """Keep the thread for the next request once whatever this request left on it has run."""
        try:
            await asyncio.get_running_loop().run_in_executor(executor, int)  # runs after all earlier work
        except (asyncio.CancelledError, RuntimeError):
            executor.shutdown(wait=False)
            raise
        if len(self._idle) < KEPT_IDLE:
            self._idle.append(executor)
        else:
            executor.shutdown(wait=False)

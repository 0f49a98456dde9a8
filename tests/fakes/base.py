"""Shared machinery for fake HTTP servers: a background aiohttp app with recording and failure modes."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self

from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BASE_MODES = frozenset({"ok", "refuse", "500", "hang", "drop"})


@dataclass
class UploadedFile:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """What a client sent, as the fake server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, like HTTP
    body: bytes = b""
    json: Any = None
    form: dict[str, str | UploadedFile] = field(default_factory=dict)
    # Image bytes the server decoded (Ollama base64 images, ComfyUI uploads), so tests
    # can compare them with what they meant to send.
    images: list[bytes] = field(default_factory=list)


RECORDED = web.RequestKey("recorded", RecordedRequest)


class FakeServer:
    """An aiohttp app on 127.0.0.1 with an OS-assigned port, served from its own thread and loop."""

    extra_modes: frozenset[str] = frozenset()
    # Paths whose handlers implement "drop" themselves by sending a partial stream.
    streaming_paths: frozenset[str] = frozenset()

    def __init__(self, *, latency: float = 0.0, mode: str = "ok") -> None:
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        # Requests being answered right now, and the most there ever were at once,
        # so tests can check that a client never exceeds its concurrency.
        self.in_flight = 0
        self.max_in_flight = 0
        self.port: int = 0
        self._mode = self._checked_mode(mode)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._mode_changed: asyncio.Event | None = None

    # --- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start serving; returns self so `fake = FakeX().start()` reads well."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        try:
            self._call(self._startup())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)  # leave no thread behind
            self._thread.join(timeout=10)
            self._loop.close()
            self._thread = self._loop = None
            raise
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget the recorded requests."""
        self.requests.clear()

    # --- failure modes ---------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        # Applied on the server loop and waited for, so a test can act right after setting it.
        value = self._checked_mode(value)
        if self._loop is None:
            self._mode = value
        else:
            self._call(self._switch_mode(value))

    def _checked_mode(self, value: str) -> str:
        if value not in BASE_MODES | self.extra_modes:
            raise ValueError(f"unknown mode {value!r} for {type(self).__name__}")
        return value

    async def _switch_mode(self, value: str) -> None:
        was_refusing = self._mode == "refuse"
        self._mode = value
        if value == "refuse" and not was_refusing:
            await self._unlisten()
        elif was_refusing and value != "refuse":
            await self._listen()
        await self.on_mode_changed()
        self._wake_hung_requests()

    async def wait_while(self, mode: str) -> None:
        """Wait on the server loop until the mode is no longer `mode` (a handler that stalls)."""
        while self._mode == mode:
            assert self._mode_changed is not None
            await self._mode_changed.wait()

    def _wake_hung_requests(self) -> None:
        assert self._mode_changed is not None
        self._mode_changed.set()
        self._mode_changed = asyncio.Event()

    # --- hooks for subclasses --------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def failure_response(self) -> web.StreamResponse:
        """The reply every route gives in mode "500"; subclasses use their server's error shape."""
        return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")

    def route_miss_response(self, request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
        """The reply for an unknown path or a wrong method."""
        raise exc

    async def on_started(self) -> None:
        """Called on the server loop once listening."""

    async def on_stopping(self) -> None:
        """Called on the server loop before connections are closed."""

    async def on_mode_changed(self) -> None:
        """Called on the server loop when a test sets the mode."""

    # --- helpers for handlers --------------------------------------------------

    def drop_connection(self, request: web.Request) -> NoReturn:
        """Close the TCP connection, flushing what was already written but never finishing the reply."""
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # stops aiohttp from writing a reply on the closed socket

    # --- internals -------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _startup(self) -> None:
        self._mode_changed = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=100 * 1024 * 1024)
        self.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        if self._mode != "refuse":
            await self._listen()
        await self.on_started()

    async def _shutdown(self) -> None:
        await self.on_stopping()
        # Cancels hung, streaming and websocket handlers at once instead of waiting for them.
        await self._unlisten()
        assert self._runner is not None
        await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        assert self._runner is not None
        # Re-listening after "refuse" must reuse the port the test already knows.
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        self.port = self._runner.addresses[0][1]

    async def _unlisten(self) -> None:
        assert self._runner is not None and self._runner.server is not None
        if self._site is not None:
            await self._site.stop()
            self._site = None
        # A stopped server also loses its open connections (keep-alive, websockets).
        await self._runner.server.shutdown(0.05)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        await self._record(request)
        await self.wait_while("hang")
        if self.latency:
            await asyncio.sleep(self.latency)
        if self._mode == "500":
            return self.failure_response()
        if self._mode == "drop" and request.path not in self.streaming_paths:
            return self.drop_connection(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if request.match_info.http_exception is None:
                raise
            return self.route_miss_response(request, exc)
        finally:
            self.in_flight -= 1

    async def _record(self, request: web.Request) -> None:
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
        )
        if request.content_type.startswith("multipart/"):
            # post() caches the parsed form, so handlers can call it again.
            for name, value in (await request.post()).items():
                recorded.form[name] = _form_value(value)
        elif request.can_read_body:
            recorded.body = await request.read()
            if request.content_type == "application/json":
                recorded.json = _parse_json(recorded.body)
        request[RECORDED] = recorded
        self.requests.append(recorded)


def _form_value(value: Any) -> str | UploadedFile:
    if isinstance(value, web.FileField):
        data = value.file.read()
        value.file.seek(0)  # the handler reads the same file object again
        return UploadedFile(value.filename, value.content_type, data)
    return str(value)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None

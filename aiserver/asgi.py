"""The ASGI entry point: HTTP through Django, WebSockets through Channels.

Under daphne, Twisted's HTTP parser is also taught to refuse oversized requests with an answer
(see guard_requests), since Django only sees a request once its whole body has been read.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiserver.settings")
# Django must be set up before anything imports models (the routing does).
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402

from aiserver.handler import ReusedThreadsASGIHandler  # noqa: E402

django_asgi_app = ReusedThreadsASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from aiserver.routing import websocket_urlpatterns  # noqa: E402
from imagetotext.api.openai_wire import error_body as openai_error_body  # noqa: E402
from imagetotext.api.wire import response_status  # noqa: E402

# Routes whose body carries a base64 image in JSON, and those that take one as a file part.
JSON_IMAGE_PATHS = frozenset(
    {"/api/generate", "/api/chat", "/api/OllamaGeneration", "/api/QueueOllamaGeneration", "/v1/chat/completions"}
)
UPLOAD_PATHS = frozenset({"/api/ImageToText", "/api/QueueImageToText"})
BATCH_PATHS = frozenset({"/api/QueueImageToTextBatch"})
# Routes whose clients read Ollama's {"error": ...}; those under /v1/ read OpenAI's.
OLLAMA_PATHS = frozenset(
    {"/api/generate", "/api/chat", "/api/OllamaGeneration", "/api/tags", "/api/show", "/api/ps", "/api/version"}
)
OPENAI_PREFIX = "/v1/"
# How long a refused connection is drained before it is closed: closing on unread data sends a
# reset, and the client would lose the answer.
LINGER_SECONDS = 2


def body_limit(path: str) -> int:
    """The largest body the route can need (settings.py says why)."""
    if path in JSON_IMAGE_PATHS:
        return int(settings.JSON_BODY_MAX_BYTES)
    if path in UPLOAD_PATHS:
        return int(settings.UPLOAD_BODY_MAX_BYTES)
    if path in BATCH_PATHS:
        return int(settings.BATCH_BODY_MAX_BYTES)
    if path.startswith(("/api/", OPENAI_PREFIX)):
        return int(settings.REQUEST_FIELDS_MAX_BYTES)
    return int(settings.PAGE_BODY_MAX_BYTES)


def route_of(target: bytes | None) -> str:
    """The path of a request line's target (origin or absolute form), as Django will route it."""
    try:
        return unquote(urlsplit(target.decode("ascii")).path) if target else ""
    except (UnicodeDecodeError, ValueError):
        return ""


def refusal(path: str, status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response in the route's error shape (AI Server's when the route is unknown,
    OpenAI's under /v1/)."""
    body: dict[str, Any] = {"responseStatus": response_status(message, code)}
    if path in OLLAMA_PATHS:
        body = {"error": message, **body}
    elif path.startswith(OPENAI_PREFIX):
        body = openai_error_body(status, message)
    payload = json.dumps(body).encode()
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    return head.encode() + payload


def answer_and_close(channel: Any, response: bytes) -> None:
    """Send the answer, then read and drop whatever the client still sends until it closes (or LINGER_SECONDS)."""

    def drop(*args: object) -> None:
        return None

    channel.dataReceived = channel.lineReceived = channel.rawDataReceived = drop
    channel.transport.write(response)
    half_close = getattr(channel.transport, "loseWriteConnection", None)
    if half_close is not None:
        half_close()
    channel.setTimeout(LINGER_SECONDS)


def guard_requests() -> None:
    """Teach daphne's Twisted parser to answer, not drop, requests too large to take.

    - A header line over Twisted's line limit (16 kB) used to close the connection without a
      word, and headers over its total limit got a bare 400: both now get 431 (414 for a
      request line that long).
    - Its other refusals (a malformed request line, header or chunk) were a bare 400; now they
      carry a body in the route's error shape too.
    - A body longer than its route can need (body_limit) is refused with 413 from its
      Content-Length before any of it is read; a chunked one is cut off at the limit.
    - Twisted no longer parses form bodies nobody reads: daphne hands Django the raw body,
      yet Twisted's Request first ran each multipart upload through the email package (about
      1 ms per 10 kB, most of a second for a 12 MP photo, on the thread that serves every
      connection). Its Request takes parsePOSTFormSubmission for this; daphne does not pass it.
    """
    try:
        from daphne import http_protocol
        from twisted.web.http import HTTPChannel
    except ImportError:  # served by another ASGI server
        return
    if getattr(http_protocol.WebRequest, "guarded", False):
        return
    http_protocol.WebRequest = guarded_request(http_protocol.WebRequest)
    guard_headers(HTTPChannel)


def guarded_request(web_request: type) -> type:
    class GuardedRequest(web_request):
        guarded = True

        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("parsePOSTFormSubmission", False)
            super().__init__(*args, **kwargs)
            self.refused, self.body_limit, self.body_read = False, 0, 0

        def gotLength(self, length: int | None) -> None:
            self.route = route_of(getattr(self.channel, "_path", None))
            self.body_limit = body_limit(self.route)
            if length is not None and length > self.body_limit:
                self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the refusal
                self.refuse_body()
                length = 0
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self.refused:
                return
            self.body_read += len(data)
            if self.body_read > self.body_limit:  # a chunked body: no length was declared
                self.refuse_body()
                return
            super().handleContentChunk(data)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            if not self.refused:
                super().requestReceived(command, path, version)

        def refuse_body(self) -> None:
            self.refused = True
            message = f"The request body is larger than the {self.body_limit} bytes this route takes"
            answer_and_close(self.channel, refusal(self.route, 413, message, "RequestTooLarge"))

    return GuardedRequest


def guard_headers(channel_class: Any) -> None:
    made_line_received = channel_class.lineReceived

    def lineReceived(self: Any, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            return refuse_headers(self)
        return made_line_received(self, line)

    def lineLengthExceeded(self: Any, line: bytes) -> None:
        refuse_headers(self)

    def _respondToBadRequestAndDisconnect(self: Any) -> None:  # Twisted's bare 400, without a body
        path = route_of(getattr(self, "_path", None))
        answer_and_close(self, refusal(path, 400, "The request is not valid HTTP/1.1", "BadRequest"))

    channel_class.lineReceived = lineReceived
    channel_class.lineLengthExceeded = lineLengthExceeded
    channel_class._respondToBadRequestAndDisconnect = _respondToBadRequestAndDisconnect


def refuse_headers(channel: Any) -> None:
    """431 (or 414 while the request line is still coming) for a request whose head is too large."""
    if not hasattr(channel, "_path"):
        response = refusal("", 414, f"The request line is longer than {channel.MAX_LENGTH} bytes", "UriTooLong")
    else:
        message = f"The request's headers are larger than {channel.totalHeadersSize} bytes"
        response = refusal(route_of(channel._path), 431, message, "RequestHeaderFieldsTooLarge")
    answer_and_close(channel, response)


def feed_bodies_as_read() -> None:
    """Hand each request's body to the application chunk by chunk as it reads them, not all at once.

    Twisted spools a body over 100 kB to a temporary file, but daphne then reads the whole file
    into its queue for the application before the application runs: a 200 MB page submit sat
    in the web process's memory. Here the queue keeps only each chunk's length, and the chunk is
    read from Twisted's file when the application takes it.
    """
    try:
        from daphne.server import Server
    except ImportError:  # served by another ASGI server
        return
    made = Server.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        queue = made(self, protocol, scope)
        if queue is not None and scope.get("type") == "http":
            read_lazily(queue, protocol)
        return queue

    Server.create_application = create_application


def read_lazily(queue: Any, request: Any) -> None:
    put, get = queue._put, queue._get
    position = [0]

    def put_length(message: dict[str, Any]) -> None:
        if message.get("type") == "http.request" and message.get("body"):
            message = {**message, "body": None, "length": len(message["body"])}
        put(message)

    def get_body() -> dict[str, Any]:
        message = get()
        if message.get("body", b"") is not None:
            return message
        if request.content.closed:  # the client went away; its disconnect follows
            return {"type": "http.disconnect"}
        request.content.seek(position[0])
        body = request.content.read(message["length"])
        position[0] += len(body)
        return {"type": "http.request", "body": body, "more_body": message["more_body"]}

    queue._put, queue._get = put_length, get_body


guard_requests()
feed_bodies_as_read()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

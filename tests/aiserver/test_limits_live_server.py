"""Oversized requests against a real daphne: answered (431, 414, 413) before their excess is read.

Twisted reads a request's whole body before daphne hands it to Django, so these limits live in
aiserver/asgi.py, in daphne's parser; only a real server shows them. The refusals never reach
Django, so the server needs no database.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.live_server import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = dict(os.environ, DATA_DIR=str(tmp_path_factory.mktemp("daphne")))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "aiserver.asgi:application"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process)
        yield "127.0.0.1", port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "daphne exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("daphne did not listen")


def exchange(server: tuple[str, int], head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send a raw request and read the whole answer (the server closes after it)."""
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(head + body)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer: its Content-Length of body, or up to the close."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", -1))
    while (length < 0 or len(body) < length) and (chunk := sock.recv(65536)):
        body += chunk
    return int(status_line.split()[1]), headers, body


def request(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_huge_cookie_gets_431_in_ai_servers_shape(server) -> None:
    head = b"GET /api/ActiveAiModels HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + b"a=" + b"b" * 100_000 + b"\r\n\r\n"

    status, headers, body = exchange(server, head)

    assert status == 431
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["responseStatus"]["errorCode"] == "RequestHeaderFieldsTooLarge"


def test_a_huge_header_on_generate_gets_431_with_an_ollama_error(server) -> None:
    status, _, body = exchange(server, request("/api/generate", "X-Foo: " + "f" * 100_000))

    assert status == 431
    assert "headers are larger" in json.loads(body)["error"]


def test_many_headers_over_the_total_limit_get_431(server) -> None:
    status, _, body = exchange(server, request("/api/ImageToText", *(f"X-Pad-{n}: {'p' * 4000}" for n in range(6))))

    assert status == 431
    assert "responseStatus" in json.loads(body)


def test_a_request_line_too_long_gets_414(server) -> None:
    status, _, body = exchange(server, b"GET /api/docs?" + b"q" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    assert status == 414
    assert json.loads(body)["responseStatus"]["errorCode"] == "UriTooLong"


def test_a_declared_100_mb_body_is_refused_at_once_without_sending_it(server) -> None:
    started = time.monotonic()

    status, _, body = exchange(
        server, request("/api/generate", "Content-Type: application/json", "Content-Length: 100000000")
    )

    assert time.monotonic() - started < 2
    assert status == 413
    assert json.loads(body)["error"].startswith("The request body is larger than")


def test_a_declared_body_too_large_for_chat_completions_gets_openais_shape(server) -> None:
    status, _, body = exchange(
        server, request("/v1/chat/completions", "Content-Type: application/json", "Content-Length: 100000000")
    )

    assert status == 413
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("The request body is larger")


def test_a_declared_body_over_the_upload_limit_gets_ai_servers_shape(server) -> None:
    length = settings.UPLOAD_BODY_MAX_BYTES + 1
    head = request(
        "/api/QueueImageToText", "Content-Type: multipart/form-data; boundary=b", f"Content-Length: {length}"
    )

    status, _, body = exchange(server, head)

    assert status == 413
    assert json.loads(body) == {
        "responseStatus": {
            "errorCode": "RequestTooLarge",
            "message": f"The request body is larger than the {settings.UPLOAD_BODY_MAX_BYTES} bytes this route takes",
            "errors": [],
        }
    }


def test_expect_100_continue_gets_the_413_instead_of_continue(server) -> None:
    head = request("/api/ImageToText", "Content-Length: 999999999", "Expect: 100-continue")

    status, _, _ = exchange(server, head)

    assert status == 413


def test_a_chunked_body_is_cut_off_at_the_limit(server) -> None:
    limit = settings.UPLOAD_BODY_MAX_BYTES
    chunk = b"%x\r\n%s\r\n" % (2**20, b"x" * 2**20)
    sent = 0
    with socket.create_connection(server, timeout=10) as sock:
        sock.sendall(
            request("/api/ImageToText", "Transfer-Encoding: chunked", "Content-Type: multipart/form-data; boundary=b")
        )
        while not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += 2**20
            assert sent < 3 * limit, "the server read on past the limit"
        status, _, body = read_answer(sock)

    assert status == 413
    assert json.loads(body)["responseStatus"]["errorCode"] == "RequestTooLarge"
    assert sent > limit  # it read up to the limit: bodies that fit are not refused


def test_bodies_within_the_limit_reach_django(server) -> None:
    body = b"x" * 500_000  # under the 1 MB a route without an image takes
    head = request("/api/ActiveAiModels", "Content-Type: text/plain", f"Content-Length: {len(body)}")

    status, headers, answer = exchange(server, head, body)

    assert status == 405  # Django's answer: ActiveAiModels takes GET only
    assert headers["allow"] == "GET"
    assert json.loads(answer)["responseStatus"]["errorCode"] == "NotSupportedException"


def test_a_chunked_body_within_the_limit_reaches_django(server) -> None:
    head = request("/api/ActiveAiModels", "Transfer-Encoding: chunked")

    status, _, _ = exchange(server, head, b"5\r\nhello\r\n0\r\n\r\n")

    assert status == 405


def test_ordinary_headers_still_get_through(server) -> None:
    status, headers, _ = exchange(server, b"GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: a=1\r\n\r\n")

    assert status == 200
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "bad_header", ["Content-Length: twelve", "Transfer-Encoding: gzip", "Bad Header Without Colon"]
)
def test_a_request_twisted_cannot_parse_gets_a_400_with_a_body(server, bad_header: str) -> None:
    status, _, body = exchange(server, request("/api/generate", bad_header))

    assert status == 400
    assert json.loads(body)["error"] == "The request is not valid HTTP/1.1"


def test_a_batch_zip_larger_than_one_image_reaches_django(server) -> None:
    body = b"x" * (3 * 1024 * 1024)  # a small ZIP already passes the 1 MB of a route without images
    head = request("/api/QueueImageToTextBatch", "Content-Type: text/plain", f"Content-Length: {len(body)}")

    status, _, answer = exchange(server, head, body)

    assert status == 401  # Django's answer (no key), not the guard's 413
    assert json.loads(answer)["responseStatus"]["errorCode"] == "Unauthorized"

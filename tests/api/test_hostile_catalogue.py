"""A catalogue of malformed and hostile requests, across every API route and the page's POSTs.

Each row says what it sends, the status it must get and the error shape: AI Server's
`responseStatus` on /api/ routes, Ollama's `error` on the Ollama ones, a readable page (or the
sign-in redirect) on the page. After every row, and after the whole catalogue run in one go,
nothing is left orphaned or half-written: every file in MEDIA_ROOT belongs to a StoredImage,
every StoredImage has its file, every job is in a state it can be in.

The few rows that need a real server (huge headers, Content-Length, chunked bodies) are in
tests/aiserver/test_limits_live_server.py.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import Client, override_settings
from django.utils import timezone
from PIL import Image

from agents.models import Agent, Capability, DiscoveredModel, Discovery, Kind
from imagetotext import jobs
from imagetotext.models import FINISHED, ApiKey, Job, State, StoredImage

pytestmark = pytest.mark.django_db(transaction=True)


# --- files -------------------------------------------------------------------------


def encode(image: Image.Image, kind: str, **options: Any) -> bytes:
    buffer = BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header claims this size, with one tiny compressed row behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


RED = Image.new("RGB", (64, 48), "red")
PNG = encode(RED, "PNG")
FILES = {
    "png": PNG,
    "empty": b"",
    "truncated-png": PNG[:60],
    "text-named-png": b"just some words, not an image",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "html-with-png-magic": b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
    "bomb-100000x100000": png_declaring(100_000, 100_000),
    "zero-by-zero": png_declaring(0, 0),
    "polyglot-png-zip": PNG + b"PK\x03\x04" + b"\x00" * 26 + b"evil.sh#!/bin/sh\nrm -rf /\n",
    "animated-gif": encode(RED, "GIF", save_all=True, append_images=[Image.new("RGB", (64, 48), "blue")]),
    "cmyk-jpeg": encode(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
    "16-bit-grey-png": encode(Image.new("I;16", (64, 48), 30000), "PNG"),
}


def upload(name: str, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(f"{name}.png", FILES[name], content_type=content_type)


# --- the world every row runs in ----------------------------------------------------


@dataclass
class World:
    key: Client  # alice's API key
    anonymous: Client
    session: Client  # alice signed in, CSRF not enforced (as if the token were sent)
    session_no_csrf: Client  # alice signed in, CSRF enforced and no token sent
    revoked: Client
    expired: Client
    restricted: Client  # a key allowed QueueImageToText only
    bobs_job: Job
    alices_job: Job

    def bearer(self, value: str) -> Client:
        return Client(HTTP_AUTHORIZATION=value)

    def finished_job_of_alice(self) -> Job:
        job = Job.objects.create(owner=self.alices_job.owner, model="llava:7b", image=self.alices_job.image)
        jobs.cancel(job)
        return job


def key_client(user: Any, **fields: Any) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(user, 'catalogue', **fields)[1]}")


def queue(client: Client, **fields: Any) -> Job:
    response = client.post("/api/QueueImageToText", {"image": SimpleUploadedFile("a.png", PNG), **fields})
    assert response.status_code == 200, response.content
    return Job.objects.get(pk=response.json()["jobId"])


@pytest.fixture
def world(api_user, django_user_model, settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)  # queued jobs stay queued
    agent = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu.invalid:11434")
    models = [DiscoveredModel("llava:7b", Capability.VISION), DiscoveredModel("llama3.2:3b", Capability.TEXT)]
    agent.mark_online(Discovery(version="1", models=models))
    bob = django_user_model.objects.create_user("bob", "bob@example.com", "pw-for-tests-only")
    alice_key = key_client(api_user)
    session, session_no_csrf = Client(), Client(enforce_csrf_checks=True)
    session.force_login(api_user)
    session_no_csrf.force_login(api_user)
    return World(
        key=alice_key,
        anonymous=Client(),
        session=session,
        session_no_csrf=session_no_csrf,
        revoked=key_client(api_user, revoked_at=timezone.now()),
        expired=key_client(api_user, expires_at=timezone.now() - timedelta(days=1)),
        restricted=key_client(api_user, restrict_to=["QueueImageToText"]),
        bobs_job=queue(key_client(bob), RefId="bobs-ref", Model="llava:7b"),
        alices_job=queue(alice_key, RefId="taken", Model="llava:7b"),
    )


# --- rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    send: Callable[[World], HttpResponse]
    status: int
    shape: str  # "ai", "ollama", "openai", "page", "login", "same-site", "ok", "empty"
    field: str = ""  # the field the refusal must name


def json_post(path: str, body: Any, client: str = "key", raw: bool = False) -> Callable[[World], HttpResponse]:
    data = body if raw else json.dumps(body)
    return lambda w: getattr(w, client).post(path, data, content_type="application/json")


def json_get(path: str, body: Any) -> Callable[[World], HttpResponse]:
    data = body if isinstance(body, str) else json.dumps(body)
    return lambda w: w.key.generic("GET", path, data, content_type="application/json")


def form_post(path: str, fields: dict[str, Any], client: str = "key") -> Callable[[World], HttpResponse]:
    return lambda w: getattr(w, client).post(path, dict(fields))


def file_post(path: str, file: str, content_type: str = "image/png", **fields: Any) -> Callable[[World], HttpResponse]:
    return lambda w: w.key.post(path, {"image": upload(file, content_type), "Model": "llava:7b", **fields})


def raw_post(path: str, body: bytes, content_type: str, client: str = "key") -> Callable[[World], HttpResponse]:
    return lambda w: getattr(w, client).generic("POST", path, body, content_type=content_type)


def method(verb: str, path: str, client: str = "key") -> Callable[[World], HttpResponse]:
    return lambda w: getattr(w, client).generic(verb, path)


def get(path: str, client: str = "key", **query: str) -> Callable[[World], HttpResponse]:
    return lambda w: getattr(w, client).get(path, query)


def bearer(path: str, value: str, verb: str = "post") -> Callable[[World], HttpResponse]:
    return lambda w: getattr(w.bearer(value), verb)(path)


def b64(name: str) -> str:
    return base64.b64encode(FILES.get(name, PNG)).decode()


def generate(**fields: Any) -> dict[str, Any]:
    return {"model": "llava:7b", "prompt": "Describe", "images": [b64("png")], "stream": False} | fields


def chat(role: str = "user", images: list[Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": "Describe"}
    if images is not None:
        message["images"] = images
    return {"model": "llava:7b", "messages": [message], "stream": False}


def completion(image_url: str = "", model: str = "llava:7b") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "Describe"}]
    if image_url:
        parts.append({"type": "image_url", "image_url": {"url": image_url}})
    return {"model": model, "messages": [{"role": "user", "content": parts}]}


CHAT, V1 = "/api/chat", "/v1/chat/completions"
DEEP = "[" * 100_000
SURROGATE = '{"model": "llava:7b", "prompt": "\\ud800", "images": ["AAAA"]}'
NOT_UTF8 = b'{"model": "llava:7b", "prompt": "\xff\xfe", "images": ["AAAA"]}'
GARBAGE_MULTIPART = b'--b\r\nContent-Disposition: form-data; name="image"' + b"\xfe" * 2000
IT, Q = "/api/ImageToText", "/api/QueueImageToText"
STATUS, OSTATUS = "/api/GetTextGenerationStatus", "/api/GetOllamaGenerationStatus"
OG, GEN, QOG = "/api/OllamaGeneration", "/api/generate", "/api/QueueOllamaGeneration"
MODELS, DOCS, OPENAPI = "/api/ActiveAiModels", "/api/docs", "/api/openapi.json"
SUBMIT = "/ImageToText/jobs"


def page_post(action: str, client: str = "session", job: str = "bobs_job", **fields: str) -> Callable[..., Any]:
    """POST to a job's page action (cancel, retry, delete) as `client`, for `job` (a World attribute or an id)."""

    def send(w: World) -> HttpResponse:
        job_id = getattr(w, job).pk if hasattr(w, job) else job
        return getattr(w, client).post(f"/ImageToText/jobs/{job_id}/{action}", fields)

    return send


def delete_with_next(next_url: str) -> Callable[[World], HttpResponse]:
    return lambda w: w.session.post(f"/ImageToText/jobs/{w.finished_job_of_alice().pk}/delete", {"next": next_url})


def too_big_for_memory(send: Callable[[World], HttpResponse]) -> Callable[[World], HttpResponse]:
    def sent(w: World) -> HttpResponse:
        with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=50_000):
            return send(w)

    return sent


ROWS = [
    # ImageToText (waits for the job): files
    Row("it2t-no-image-part", form_post(IT, {"Model": "llava:7b"}), 400, "ai"),
    Row("it2t-empty-file", file_post(IT, "empty"), 400, "ai"),
    Row("it2t-truncated-png", file_post(IT, "truncated-png"), 400, "ai"),
    Row("it2t-text-sent-as-png", file_post(IT, "text-named-png"), 400, "ai"),
    Row("it2t-svg-with-script", file_post(IT, "svg", "image/svg+xml"), 400, "ai"),
    Row("it2t-pdf", file_post(IT, "pdf", "application/pdf"), 400, "ai"),
    Row("it2t-html-behind-png-magic", file_post(IT, "html-with-png-magic"), 400, "ai"),
    Row("it2t-decompression-bomb-header", file_post(IT, "bomb-100000x100000"), 413, "ai"),
    Row("it2t-zero-by-zero-png", file_post(IT, "zero-by-zero"), 400, "ai"),
    # ImageToText: fields
    Row("it2t-model-too-long", file_post(IT, "png", Model="m" * 201), 400, "ai", "Model"),
    Row("it2t-prompt-3mb", file_post(IT, "png", Prompt="x" * 3_000_000), 400, "ai", "Prompt"),
    Row("it2t-prompt-with-nul", file_post(IT, "png", Prompt="a\x00b"), 400, "ai", "Prompt"),
    Row("it2t-ref-id-with-nul-in-query", file_post(f"{IT}?RefId=a%00b", "png"), 400, "ai", "RefId"),
    Row("it2t-unknown-model", file_post(IT, "animated-gif", Model="no-such-model"), 404, "ai"),
    Row("it2t-text-only-model", file_post(IT, "animated-gif", Model="llama3.2:3b"), 400, "ai"),
    Row("it2t-fields-over-memory-limit", too_big_for_memory(form_post(IT, {"Prompt": "x" * 60_000})), 413, "ai"),
    Row("it2t-too-many-fields", form_post(IT, {f"f{n}": "1" for n in range(1100)}), 400, "ai"),
    # ImageToText: encodings
    Row("it2t-json-without-image", json_post(IT, {"Model": "llava:7b"}), 400, "ai"),
    Row("it2t-json-array-body", json_post(IT, [1, 2]), 400, "ai"),
    Row("it2t-json-invalid", json_post(IT, "{", raw=True), 400, "ai"),
    Row("it2t-json-not-utf8", json_post(IT, NOT_UTF8, raw=True), 400, "ai"),
    Row("it2t-json-lone-surrogate", json_post(IT, '{"Prompt": "\\udc00"}', raw=True), 400, "ai"),
    Row("it2t-json-nested-100000-deep", json_post(IT, DEEP, raw=True), 400, "ai"),
    Row("it2t-body-of-type-image-png", raw_post(IT, PNG, "image/png"), 415, "ai"),
    Row("it2t-multipart-without-boundary", raw_post(IT, b"--x\r\n", "multipart/form-data"), 400, "ai"),
    Row("it2t-garbage-multipart", raw_post(IT, GARBAGE_MULTIPART, "multipart/form-data; boundary=b"), 400, "ai"),
    # ImageToText: methods
    Row("it2t-get", method("GET", IT), 405, "ai"),
    Row("it2t-put", method("PUT", IT), 405, "ai"),
    Row("it2t-delete", method("DELETE", IT), 405, "ai"),
    Row("it2t-options", method("OPTIONS", IT), 405, "ai"),
    Row("it2t-head", method("HEAD", IT), 405, "empty"),
    # ImageToText: headers and auth
    Row("it2t-no-key", method("POST", IT, "anonymous"), 401, "ai"),
    Row("it2t-bearer-without-token", bearer(IT, "Bearer"), 401, "ai"),
    Row("it2t-basic-auth", bearer(IT, "Basic dXNlcjpwYXNz"), 401, "ai"),
    Row("it2t-garbage-authorization", bearer(IT, "\x7f\x00garbage"), 401, "ai"),
    Row("it2t-unknown-key", bearer(IT, "Bearer ak-" + "x" * 43), 401, "ai"),
    Row("it2t-revoked-key", method("POST", IT, "revoked"), 401, "ai"),
    Row("it2t-expired-key", method("POST", IT, "expired"), 401, "ai"),
    Row("it2t-key-restricted-to-another-api", method("POST", IT, "restricted"), 403, "ai"),
    Row("it2t-session-without-csrf-token", method("POST", IT, "session_no_csrf"), 403, "ai"),
    # QueueImageToText: files that are images after all, and bad ReplyTo
    Row("queue-polyglot-png-zip-is-read-as-its-png", file_post(Q, "polyglot-png-zip"), 200, "ok"),
    Row("queue-animated-gif", file_post(Q, "animated-gif"), 200, "ok"),
    Row("queue-cmyk-jpeg", file_post(Q, "cmyk-jpeg", "image/jpeg"), 200, "ok"),
    Row("queue-16-bit-grey-png", file_post(Q, "16-bit-grey-png"), 200, "ok"),
    Row("queue-decompression-bomb-header", file_post(Q, "bomb-100000x100000"), 413, "ai"),
    Row("queue-reply-to-broken-ipv6", file_post(Q, "animated-gif", ReplyTo="http://[::1/cb"), 400, "ai", "ReplyTo"),
    Row(
        "queue-reply-to-bad-ipv6-literal", file_post(Q, "animated-gif", ReplyTo="http://[zz::1]/"), 400, "ai", "ReplyTo"
    ),
    Row(
        "queue-reply-to-loopback", file_post(Q, "animated-gif", ReplyTo="http://127.0.0.1:8000/"), 400, "ai", "ReplyTo"
    ),
    Row(
        "queue-reply-to-env-secret",
        file_post(Q, "animated-gif", ReplyTo="$SECRET_KEY@https://a.example/"),
        400,
        "ai",
        "ReplyTo",
    ),
    Row("queue-reply-to-ftp", file_post(Q, "animated-gif", ReplyTo="ftp://example.com/x"), 400, "ai", "ReplyTo"),
    Row(
        "queue-reply-to-bad-method",
        file_post(Q, "animated-gif", ReplyTo="DELETE https://example.com/"),
        400,
        "ai",
        "ReplyTo",
    ),
    Row("queue-state-too-long", file_post(Q, "animated-gif", State="s" * 2001), 400, "ai", "State"),
    Row("queue-ref-id-too-long", file_post(Q, "animated-gif", RefId="r" * 101), 400, "ai"),
    Row("queue-ref-id-in-use", file_post(Q, "animated-gif", RefId="taken"), 400, "ai", "RefId"),
    Row("queue-get", method("GET", Q), 405, "ai"),
    # GetTextGenerationStatus
    Row("status-neither-job-id-nor-ref-id", get(STATUS), 400, "ai"),
    Row("status-job-id-letters", get(STATUS, JobId="abc"), 400, "ai"),
    Row("status-job-id-superscript-two", get(STATUS, JobId="²"), 400, "ai", "JobId"),
    Row("status-job-id-arabic-indic-digit", get(STATUS, JobId="٣"), 400, "ai", "JobId"),
    Row("status-job-id-negative", get(STATUS, JobId="-1"), 400, "ai"),
    Row("status-job-id-beyond-bigint", get(STATUS, JobId="9" * 30), 404, "ai"),
    Row("status-ref-id-with-nul", get(STATUS, RefId="a\x00b"), 400, "ai", "RefId"),
    Row("status-json-job-id-a-number", json_get(STATUS, {"JobId": 5}), 400, "ai", "JobId"),
    Row("status-json-ref-id-an-array", json_get(STATUS, {"RefId": ["taken"]}), 400, "ai", "RefId"),
    Row("status-json-ref-id-null", json_get(STATUS, {"RefId": None}), 400, "ai", "JobId"),
    Row("status-json-nested-deep", json_get(STATUS, DEEP), 400, "ai"),
    Row("status-other-users-job-id", lambda w: w.key.get(STATUS, {"JobId": w.bobs_job.pk}), 404, "ai"),
    Row("status-other-users-ref-id", get(STATUS, RefId="bobs-ref"), 404, "ai"),
    Row("status-no-key", get(STATUS, "anonymous", RefId="taken"), 401, "ai"),
    Row("status-post", method("POST", STATUS), 405, "ai"),
    # OllamaGeneration and /api/generate
    Row("ollama-no-model", json_post(OG, generate(model="")), 400, "ollama"),
    Row("ollama-model-a-number", json_post(OG, generate(model=7)), 400, "ollama"),
    Row("ollama-images-a-string", json_post(OG, generate(images=b64("png"))), 400, "ollama"),
    Row("ollama-images-empty", json_post(OG, generate(images=[])), 400, "ollama"),
    Row("ollama-seventeen-images", json_post(OG, generate(images=[b64("png")] * 17)), 400, "ollama"),
    Row("ollama-image-a-number", json_post(OG, generate(images=[5])), 400, "ollama"),
    Row("ollama-bad-base64", json_post(OG, generate(images=["not base64!"])), 400, "ollama"),
    Row("ollama-data-url", json_post(OG, generate(images=["data:image/png;base64," + b64("png")])), 400, "ollama"),
    Row("ollama-base64-of-a-pdf", json_post(OG, generate(images=[b64("pdf")])), 400, "ollama"),
    Row("ollama-base64-bomb-header", json_post(OG, generate(images=[b64("bomb-100000x100000")])), 413, "ollama"),
    Row("ollama-stream-a-string", json_post(OG, generate(stream="yes")), 400, "ollama"),
    Row("ollama-nul-in-options", json_post(OG, generate(options={"stop": ["\x00"]})), 400, "ollama"),
    Row("ollama-body-not-json", json_post(OG, "hello", raw=True), 400, "ollama"),
    Row("ollama-body-not-utf8", json_post(OG, NOT_UTF8, raw=True), 400, "ollama"),
    Row("ollama-no-key", json_post(OG, generate(), client="anonymous"), 401, "ollama"),
    Row("ollama-get", method("GET", OG), 405, "ollama"),
    Row("generate-nested-100000-deep", json_post(GEN, DEEP, raw=True), 400, "ollama"),
    Row("generate-lone-surrogate", json_post(GEN, SURROGATE, raw=True), 400, "ollama"),
    Row("generate-multipart", file_post(GEN, "animated-gif"), 415, "ollama"),
    Row(
        "generate-form-type-with-bad-json",
        raw_post(GEN, b"model=x", "application/x-www-form-urlencoded"),
        400,
        "ollama",
    ),
    Row(
        "generate-over-the-memory-limit",
        too_big_for_memory(json_post(GEN, generate(prompt="p" * 60_000))),
        413,
        "ollama",
    ),
    Row(
        "generate-revoked-key",
        lambda w: w.revoked.post(GEN, generate(), content_type="application/json"),
        401,
        "ollama",
    ),
    Row("generate-put", method("PUT", GEN), 405, "ollama"),
    # QueueOllamaGeneration and its status
    Row("queue-ollama-no-request", json_post(QOG, {"refId": "x"}), 400, "ollama"),
    Row("queue-ollama-request-a-string", json_post(QOG, {"request": "generate"}), 400, "ollama"),
    Row(
        "queue-ollama-broken-ipv6-reply-to",
        json_post(QOG, {"request": generate(), "replyTo": "http://[::1/"}),
        400,
        "ollama",
        "ReplyTo",
    ),
    Row("queue-ollama-nested-deep", json_post(QOG, DEEP, raw=True), 400, "ollama"),
    Row("ollama-status-unicode-digits", get(OSTATUS, JobId="²"), 400, "ai", "JobId"),
    Row("ollama-status-other-users-job", lambda w: w.key.get(OSTATUS, {"JobId": w.bobs_job.pk}), 404, "ai"),
    # ActiveAiModels, the docs and the OpenAPI document
    Row("models-post", method("POST", MODELS, "anonymous"), 405, "ai"),
    Row("models-vision-perhaps", get(MODELS, "anonymous", Vision="perhaps"), 400, "ai"),
    Row("models-unknown-provider", get(MODELS, "anonymous", Provider="skynet"), 400, "ai"),
    Row("models-unknown-key", bearer(MODELS, "Bearer ak-nope", "get"), 401, "ai"),
    Row("models-revoked-key", method("GET", MODELS, "revoked"), 401, "ai"),
    Row("docs-post", method("POST", DOCS, "anonymous"), 405, "ai"),
    Row("openapi-delete", method("DELETE", OPENAPI, "anonymous"), 405, "ai"),
    Row("openapi-with-garbage-authorization-is-public", bearer(OPENAPI, "Bearer \x00", "get"), 200, "ok"),
    # The page's POST routes
    Row("page-submit-anonymous", method("POST", SUBMIT, "anonymous"), 302, "login"),
    Row("page-submit-without-csrf", method("POST", SUBMIT, "session_no_csrf"), 403, "page"),
    Row("page-submit-get", method("GET", SUBMIT, "session"), 405, "empty"),
    Row("page-submit-nothing", method("POST", SUBMIT, "session"), 400, "page"),
    Row(
        "page-submit-garbage-multipart",
        raw_post(SUBMIT, GARBAGE_MULTIPART, "multipart/form-data; boundary=b", "session"),
        400,
        "page",
    ),
    Row("page-submit-run-again-unicode-digits", form_post(SUBMIT, {"again": "²"}, "session"), 400, "page"),
    Row("page-submit-run-again-others-job", lambda w: w.session.post(SUBMIT, {"again": w.bobs_job.pk}), 400, "page"),
    Row(
        "page-submit-truncated-png", lambda w: w.session.post(SUBMIT, {"images": upload("truncated-png")}), 400, "page"
    ),
    Row("page-cancel-others-job", page_post("cancel"), 404, "page"),
    Row("page-cancel-without-csrf", page_post("cancel", "session_no_csrf", "alices_job"), 403, "page"),
    Row("page-cancel-anonymous", page_post("cancel", "anonymous", "alices_job"), 302, "login"),
    Row("page-retry-others-job", page_post("retry"), 404, "page"),
    Row("page-retry-id-beyond-bigint", page_post("retry", job="9" * 30), 404, "page"),
    Row("page-retry-id-not-a-number", page_post("retry", job="abc"), 404, "page"),
    Row("page-delete-others-job", page_post("delete"), 404, "page"),
    Row("page-delete-unfinished-job", page_post("delete", job="alices_job"), 409, "page"),
    Row("page-delete-get", lambda w: w.session.get(f"/ImageToText/jobs/{w.alices_job.pk}/delete"), 405, "empty"),
    Row("page-delete-next-off-site", delete_with_next("https://evil.invalid/"), 302, "same-site"),
    Row("page-delete-next-scheme-relative", delete_with_next("//evil.invalid/"), 302, "same-site"),
    # Ollama's chat
    Row("chat-no-image", json_post(CHAT, chat()), 400, "ollama"),
    Row("chat-no-model", json_post(CHAT, chat(images=[b64("png")]) | {"model": ""}), 400, "ollama"),
    Row("chat-messages-a-string", json_post(CHAT, {"model": "llava:7b", "messages": "hi"}), 400, "ollama"),
    Row("chat-tools", json_post(CHAT, chat(images=[b64("png")]) | {"tools": [{"type": "function"}]}), 400, "ollama"),
    Row("chat-tool-role", json_post(CHAT, chat(role="tool", images=[b64("png")])), 400, "ollama"),
    Row("chat-bad-base64", json_post(CHAT, chat(images=["not base64!"])), 400, "ollama"),
    Row("chat-data-url", json_post(CHAT, chat(images=["data:image/png;base64," + b64("png")])), 400, "ollama"),
    Row("chat-base64-of-a-pdf", json_post(CHAT, chat(images=[b64("pdf")])), 400, "ollama"),
    Row("chat-not-json", json_post(CHAT, "{", raw=True), 400, "ollama"),
    Row("chat-no-key", json_post(CHAT, chat(images=[b64("png")]), client="anonymous"), 401, "ollama"),
    # OpenAI's chat completions
    Row("v1-no-image", json_post(V1, completion()), 400, "openai"),
    Row("v1-bad-data-url", json_post(V1, completion("data:image/png;base64,!!!")), 400, "openai"),
    Row("v1-data-url-of-a-pdf", json_post(V1, completion("data:image/png;base64," + b64("pdf"))), 400, "openai"),
    Row("v1-remote-url-not-allowed", json_post(V1, completion("http://127.0.0.1:1/a.png")), 400, "openai"),
    Row("v1-n-2", json_post(V1, completion("data:image/png;base64," + b64("png")) | {"n": 2}), 400, "openai"),
    Row("v1-tools", json_post(V1, completion("data:image/png;base64," + b64("png")) | {"tools": [{}]}), 400, "openai"),
    Row("v1-messages-empty", json_post(V1, {"model": "llava:7b", "messages": []}), 400, "openai"),
    Row("v1-not-json", json_post(V1, "{", raw=True), 400, "openai"),
    Row("v1-no-key", json_post(V1, completion(), client="anonymous"), 401, "openai"),
    Row("v1-unknown-model", json_post(V1, completion("data:image/png;base64," + b64("png"), "nope")), 404, "openai"),
    Row("v1-models-no-key", lambda w: w.anonymous.get("/v1/models"), 401, "openai"),
]


# --- checks ----------------------------------------------------------------------------


def assert_shape(row: Row, response: HttpResponse) -> None:
    assert response.status_code == row.status, response.content[:500]
    if row.shape in ("ai", "ollama"):
        assert response["Content-Type"] == "application/json"
        status = response.json()["responseStatus"]
        assert status["errorCode"] and status["message"] and isinstance(status["errors"], list)
        if row.field:
            assert status["errors"][0]["fieldName"] == row.field, status
    if row.shape == "ollama":
        assert isinstance(response.json()["error"], str) and response.json()["error"]
    elif row.shape == "openai":
        error = response.json()["error"]
        assert error["message"] and error["type"] and set(error) == {"message", "type", "param", "code"}
        assert "responseStatus" not in response.json()
    elif row.shape == "ai":
        assert "error" not in response.json()
    elif row.shape == "ok":
        assert "responseStatus" not in response.json()
    elif row.shape == "page":
        assert response["Content-Type"].startswith("text/")
        assert response.content.strip()
    elif row.shape == "login":
        assert response["Location"].startswith("/accounts/login/")
    elif row.shape == "same-site":
        assert response["Location"].startswith("/") and not response["Location"].startswith("//")
    else:
        assert row.shape == "empty"


def assert_nothing_orphaned_or_half_written(media_root: Path) -> None:
    on_disk = {str(path.relative_to(media_root)) for path in media_root.rglob("*") if path.is_file()}
    stored = set(StoredImage.objects.values_list("file", flat=True))
    assert on_disk - stored == set(), "files no StoredImage owns"
    assert stored - on_disk == set(), "StoredImages without their file"
    for job in Job.objects.all():
        assert job.state in State.values, job
        assert job.image_id is not None, job
        if job.state == State.STARTED:
            assert job.agent_id is not None and job.started_at is not None, job
        if job.state in FINISHED:
            assert job.finished_at is not None, job
        if job.state == State.QUEUED:
            assert job.finished_at is None, job


def test_the_catalogue_covers_sixty_requests_and_every_route() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)) >= 60
    prefixes = {row_id.split("-")[0] for row_id in ids}
    expected = {"it2t", "queue", "status", "ollama", "generate", "models", "docs", "openapi", "page", "chat", "v1"}
    assert expected <= prefixes


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_hostile_request_is_refused_in_its_routes_shape(world: World, settings, row: Row) -> None:
    response = row.send(world)

    assert_shape(row, response)
    assert_nothing_orphaned_or_half_written(settings.MEDIA_ROOT)


def test_after_the_whole_catalogue_nothing_is_orphaned_or_half_written(world: World, settings) -> None:
    wrong = []
    for row in ROWS:
        response = row.send(world)
        try:
            assert_shape(row, response)
        except (AssertionError, ValueError, KeyError) as error:
            wrong.append(f"{row.id}: {error!r}"[:200])

    assert_nothing_orphaned_or_half_written(settings.MEDIA_ROOT)
    assert Job.objects.filter(owner=world.bobs_job.owner).count() == 1  # nothing reached bob's jobs
    assert wrong == []

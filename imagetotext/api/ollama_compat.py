"""Ollama's generate API, so Ollama clients can point at this server, plus AI Server's queued variant.

What Ollama's routes share (the images, the reply's shape, streaming, errors) is here too;
/api/chat builds on it (imagetotext.api.ollama_chat).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from agents.clients.ollama import GENERATE_KEYS
from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.image_to_text import find_job, reply_to, run_or_wait, status_url
from imagetotext.api.streaming import TextFeed
from imagetotext.api.wire import json_body, lower_keys, methods, refusal_response, reply, response_status, text_field
from imagetotext.conf import Conf
from imagetotext.db_threads import arun
from imagetotext.errors import ImageRejected, Refusal
from imagetotext.images import UploadedImage, read_upload
from imagetotext.jobs import JobRequest, create_with_upload, validate
from imagetotext.models import Api, Job, State

# The final object's metrics, as the backend reported them (protocols.md A.2); chat has no context.
OLLAMA_METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)
# Ollama takes any number of images; a request here is one job, and each image costs the
# model hundreds of tokens of its context.


@dataclass(frozen=True)
class ReplyShape:
    """Where an Ollama route puts the text in its objects, and which metrics its final one has."""

    text_member: Callable[[str], dict[str, Any]]
    metrics: tuple[str, ...] = OLLAMA_METRICS


GENERATE = ReplyShape(lambda text: {"response": text}, ("context", *OLLAMA_METRICS))


def with_error_member(
    view: Callable[..., Coroutine[Any, Any, HttpResponseBase]],
) -> Callable[..., Coroutine[Any, Any, HttpResponseBase]]:
    """Ollama clients read {"error": ...}; give every refusal one, auth and method checks included."""

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = await view(request, *args, **kwargs)
        if (
            isinstance(response, HttpResponse)
            and response.status_code >= 400
            and response.get("Content-Type") == "application/json"
        ):
            body = json.loads(response.content)
            if "error" not in body and "responseStatus" in body:
                body["error"] = body["responseStatus"]["message"]
                response.content = json.dumps(body).encode()
        return response

    return wrapper


@csrf_exempt
@with_error_member
@methods("POST")
@api_view("OllamaGeneration")
async def ollama_generation(request: ApiRequest) -> HttpResponseBase:
    """POST /api/generate (streams by default, like Ollama) and /api/OllamaGeneration (does not)."""
    try:
        body = json_body(request)
        stream = stream_flag(lower_keys(body), default=request.path.endswith("/generate"))
        job = await arun(accept_generation, request, body)
    except Refusal as refusal:
        return ollama_error(refusal)
    return await ollama_answer(job, stream, GENERATE)


async def ollama_answer(job: Job, stream: bool, shape: ReplyShape) -> HttpResponseBase:
    """The job's text as NDJSON lines while it is written, or, once it ended, as one object."""
    if stream:
        return StreamingHttpResponse(stream_reply(job, shape), content_type="application/x-ndjson")
    job = await run_or_wait(job)
    if job.state == State.COMPLETED:
        return JsonResponse(final_reply(job, shape))
    message = job.error or f"The job did not finish within {Conf.SYNC_WAIT_SECONDS:g} s"
    return JsonResponse(error_body(message, job.error_code or "Timeout"), status=500)


def stream_flag(body: dict[str, Any], default: bool) -> bool:
    stream = body.get("stream", default)
    if not isinstance(stream, bool):
        raise Refusal("stream must be true or false", field="stream")
    return stream


@csrf_exempt
@methods("POST")
@api_view("QueueOllamaGeneration")
async def queue_ollama_generation(request: ApiRequest) -> JsonResponse:
    """{request: {...generate...}, refId, replyTo, tag} -> {id, refId, statusUrl}."""
    try:
        fields = lower_keys(json_body(request))
        inner = fields.get("request")
        if not isinstance(inner, dict):
            raise Refusal("Request must hold an Ollama generate request", field="Request")
        job = await arun(accept_generation, request, inner, fields, queued=True)
    except Refusal as refusal:
        return ollama_error(refusal)
    url = status_url(request, job, "get-ollama-generation-status")
    return reply({"id": job.pk, "refId": job.ref_id, "statusUrl": url})


@methods("GET")
@api_view("GetOllamaGenerationStatus")
async def get_ollama_generation_status(request: ApiRequest) -> JsonResponse:
    try:
        job = await arun(find_job, request)
    except Refusal as refusal:
        return refusal_response(refusal)
    body: dict[str, Any] = {
        "jobId": job.pk,
        "refId": job.ref_id,
        "jobState": job.state,
        "status": job.status or job.state,
    }
    if job.state == State.COMPLETED:
        body["result"] = generate_reply(job)
    elif job.finished:
        body["responseStatus"] = response_status(job.error, job.error_code)
    return reply(body)


def accept_generation(
    request: ApiRequest, generate: dict[str, Any], fields: dict[str, Any] | None = None, queued: bool = False
) -> Job:
    """Turn an Ollama generate request (one image or more) into a job."""
    generate = lower_keys(generate)
    fields = fields if fields is not None else generate
    uploads = read_images(decode_images(generate.get("images")), queued)
    job_request = JobRequest(
        owner=request.owner,
        api_key=request.api_key,
        api=Api.OLLAMA_GENERATION,
        model=text_field(generate, "model", 200),
        prompt=text_field(generate, "prompt"),
        options={key: generate[key] for key in GENERATE_KEYS if key in generate},
        ref_id=text_field(fields, "RefId", 100),
        tag=text_field(fields, "Tag", 100),
        image_count=len(uploads),
    )
    if not job_request.model:
        raise Refusal("model is required", field="model")
    if queued:
        job_request.reply_to = reply_to(request, fields)
    return create_with_upload(validate(job_request), uploads[0], hand_to_workers=queued, more=uploads[1:])


def decode_images(images: Any) -> list[bytes]:
    """The request's base64 images (at least one), each decoded as strictly as Ollama does."""
    if not isinstance(images, list) or not images:
        raise Refusal("images must hold at least one base64-encoded image", field="images")
    if len(images) > Conf.MAX_IMAGES_PER_REQUEST:
        raise Refusal(f"A request may hold at most {Conf.MAX_IMAGES_PER_REQUEST} images", field="images")
    return [decode_image(text) for text in images]


def decode_image(text: Any) -> bytes:
    """One raw base64 image, as Go's encoding/json reads []byte: strict alphabet, CR/LF ignored."""
    if not isinstance(text, str):
        raise Refusal("images must hold base64 strings", field="images")
    if text.startswith("data:"):
        raise Refusal("illegal base64 data at input byte 4 (send raw base64, without a data: prefix)", field="images")
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError) as error:
        raise Refusal(f"illegal base64 data: {error}", field="images") from None


def read_images(images: list[bytes], queued: bool) -> list[UploadedImage]:
    """Check every image; a synchronous request's first is prepared for the backend as it is checked
    (the others are prepared from storage when the job runs)."""
    first = read_upload(images[0], None if queued else Conf.RESIZE_LONGEST_SIDE)
    return [first, *(read_upload(data) for data in images[1:])]


def generate_reply(job: Job) -> dict[str, Any]:
    """What Ollama's generate answers to stream:false, with the backend's metrics when it was an Ollama."""
    return final_reply(job, GENERATE)


def final_reply(job: Job, shape: ReplyShape, text: str | None = None) -> dict[str, Any]:
    """The done:true object of the finished job: all its text (or `text`), why it stopped, the metrics."""
    raw = job.result or {}
    body: dict[str, Any] = {"model": job.model, "created_at": timestamp(job)}
    body.update(shape.text_member(job.output if text is None else text))
    body.update(done=True, done_reason=raw.get("done_reason", "stop"))
    # Only Ollama's own fields: other backends keep other things in their result.
    body.update({key: raw[key] for key in shape.metrics if key in raw})
    if "total_duration" not in body and job.duration is not None:
        body["total_duration"] = int(job.duration * 1e9)
    return body


async def stream_reply(job: Job, shape: ReplyShape) -> AsyncIterator[bytes]:
    """Each piece of the job's text as its own NDJSON line, then Ollama's done:true line (or an error line)."""
    feed = TextFeed(job)
    async for piece in feed:
        yield line({"model": job.model, "created_at": now_stamp(), **shape.text_member(piece), "done": False})
    job = feed.job
    if job.state != State.COMPLETED:
        yield line(error_body(job.error or f"The job was {job.state.lower()}", job.error_code))
    else:
        yield line(final_reply(job, shape, feed.rest()))


def line(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode() + b"\n"


def now_stamp() -> str:
    return timezone.now().isoformat().replace("+00:00", "Z")


def timestamp(job: Job) -> str:
    moment = job.finished_at or job.started_at or job.created_at
    return moment.isoformat().replace("+00:00", "Z")


def error_body(message: str, code: str = "", field: str = "") -> dict[str, Any]:
    """Ollama's {"error": ...} plus AI Server's responseStatus, so both kinds of client understand."""
    return {"error": message, "responseStatus": response_status(message, code or "Exception", field)}


def ollama_error(refusal: Refusal) -> JsonResponse:
    """A Refusal in Ollama's shape (with AI Server's beside it); image faults are the images field's."""
    field = "images" if isinstance(refusal, ImageRejected) else refusal.field
    return JsonResponse(error_body(refusal.message, refusal.code, field), status=refusal.status)

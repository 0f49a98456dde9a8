"""OpenAI's chat completions (POST /v1/chat/completions), for OpenAI clients pointed at this server.

The request becomes a chat job (protocols.md A.8): each image_url part is one of the job's
images, in order, each message's text parts (joined by newlines) its content, and Ollama's
/api/chat runs it. Florence-2 and the built-in OCR may be named as the model: they read the
one image and ignore the text. Remote image URLs are fetched only when the administrator
allows it (OPENAI_IMAGE_URLS), with the callbacks' guard on the address.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.http import JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from aiserver.tls import client_context
from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.image_to_text import run_or_wait
from imagetotext.api.openai_wire import error_body, openai_error, with_openai_errors
from imagetotext.api.streaming import TextFeed
from imagetotext.api.wire import json_body, methods
from imagetotext.callbacks import CallbackRefused, check_destination
from imagetotext.conf import Conf
from imagetotext.db_threads import arun
from imagetotext.errors import ImageRejected, Refusal
from imagetotext.images import UploadedImage, read_upload
from imagetotext.jobs import JobRequest, create_with_upload, validate
from imagetotext.models import Api, Job, State

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Ollama's prefixes (protocols.md A.8), plus the other formats this server reads.
DATA_URL = re.compile(r"data:(?:image/(?:jpeg|jpg|png|webp|gif|bmp|tiff))?;base64,(.*)", re.DOTALL | re.IGNORECASE)
INVALID_IMAGE = "invalid image input"
NO_REMOTE_IMAGES = (
    "image URLs are not currently supported, please use base64 encoded data instead "
    "(the server's administrator can allow them with OPENAI_IMAGE_URLS)"
)
FINGERPRINT = "fp_imagetotext"
# A remote image: the longest its whole fetch may take, and the most redirects followed (each checked).
FETCH_SECONDS = 10.0
MAX_REDIRECTS = 3
# The names a refusal's field has in OpenAI's request.
PARAMS = {"Model": "model", "Image": "messages", "images": "messages"}


@dataclass
class Chat:
    """An OpenAI request, read: Ollama chat messages, the images they point at, the job's options."""

    model: str
    messages: list[dict[str, Any]]
    images: list[UploadedImage]
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt(self) -> str:
        """The last user message's text: what the job shows as its prompt."""
        users = [message for message in self.messages if message["role"] == "user"]
        return str(users[-1]["content"]) if users else ""


@csrf_exempt
@with_openai_errors
@methods("POST")
@api_view("OpenAiChat")
async def chat_completions(request: ApiRequest) -> HttpResponseBase:
    """A chat.completion, or with stream:true its chunks as server-sent events."""
    try:
        # Decoding images and fetching remote ones is slow work that needs no database thread.
        chat = await asyncio.to_thread(read_chat, json_body(request))
        job = await arun(create_job, request, chat)
    except Refusal as refusal:
        return refusal_error(refusal)
    if chat.stream:
        response = StreamingHttpResponse(stream_completion(job, chat.include_usage), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        return response
    job = await run_or_wait(job)
    if job.state == State.COMPLETED:
        return JsonResponse(completion(job))
    return openai_error(500, failure(job))


def create_job(request: ApiRequest, chat: Chat) -> Job:
    job_request = JobRequest(
        owner=request.owner,
        api_key=request.api_key,
        api=Api.OPENAI_CHAT,
        model=chat.model,
        prompt=chat.prompt,
        options=chat.options,
        image_count=len(chat.images),
        messages=chat.messages,
    )
    spec = validate(job_request)
    return create_with_upload(spec, chat.images[0], hand_to_workers=False, more=chat.images[1:])


# --- reading the request ----------------------------------------------------------


def read_chat(body: dict[str, Any]) -> Chat:
    """Every check of the request that needs no database; images are decoded (or fetched) and checked."""
    refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise Refusal("model is required", field="model")
    if len(model) > 200:
        raise Refusal("model is longer than 200 characters", field="model")
    images = ImageCollector()
    messages = read_messages(body.get("messages"), images)
    if not images.images:
        raise Refusal("At least one image is required: send it as an image_url part of a message", field="messages")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise Refusal("stream_options must be an object", field="stream_options")
    return Chat(
        model.strip(),
        messages,
        images.images,
        job_options(body),
        flag(body, "stream"),
        flag(stream_options, "include_usage", "stream_options.include_usage"),
    )


def refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("tools") or body.get("functions"):
        raise Refusal("Tools and functions are not supported here", field="tools" if body.get("tools") else "functions")
    n = body.get("n")
    if n is not None and (n != 1 or isinstance(n, bool)):
        raise Refusal("Only one choice (n=1) is supported", field="n")


def flag(fields: dict[str, Any], name: str, param: str = "") -> bool:
    value = fields.get(name)
    if value is not None and not isinstance(value, bool):
        raise Refusal(f"{param or name} must be true or false", field=param or name)
    return bool(value)


def read_messages(raw: Any, images: ImageCollector) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise Refusal("messages must be a list of messages", field="messages")
    if not raw:
        raise Refusal("[] is too short - 'messages'", field="messages")
    return [read_message(message, images) for message in raw]


def read_message(message: Any, images: ImageCollector) -> dict[str, Any]:
    """One OpenAI message as an Ollama chat message; its images as positions in the job's."""
    if not isinstance(message, dict):
        raise Refusal("Each message must be an object with a role and content", field="messages")
    role = message.get("role")
    if role in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
        raise Refusal("Tool and function messages are not supported here", field="messages")
    if role not in ROLES:
        raise Refusal(f"Unknown role {role!r}: use system, developer, user or assistant", field="messages")
    texts, positions = read_content(message.get("content"), images)
    chat_message: dict[str, Any] = {"role": ROLES[role], "content": "\n".join(texts)}
    if positions:
        chat_message["images"] = positions
    return chat_message


def read_content(content: Any, images: ImageCollector) -> tuple[list[str], list[int]]:
    """A message's texts and the positions of its images."""
    if content is None:
        return [], []
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise Refusal("A message's content must be a string or a list of parts", field="messages")
    texts, positions = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise Refusal("A text part's text must be a string", field="messages")
            texts.append(part["text"])
        elif kind == "image_url":
            positions.append(images.add(part.get("image_url")))
        else:
            raise Refusal(f"Unsupported content part {kind!r}: use text or image_url parts", field="messages")
    return texts, positions


class ImageCollector:
    """The request's images in order of appearance, each checked as it is read.

    Remote images share one budget of Conf.MAX_UPLOAD_BYTES, as a request's data URLs share
    the body's limit.
    """

    def __init__(self) -> None:
        self.images: list[UploadedImage] = []
        self.budget = Conf.MAX_UPLOAD_BYTES

    def add(self, image_url: Any) -> int:
        """Read an image_url ({"url", "detail"} or the URL alone); returns its position."""
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str):
            raise Refusal(INVALID_IMAGE, field="messages")
        if url.startswith(("http://", "https://")):
            data = self.fetch(url)
        else:
            data = decode_data_url(url)
        # The first image goes to the backend at once: decode it once, for the check and for it.
        first = not self.images
        self.images.append(read_upload(data, Conf.RESIZE_LONGEST_SIDE if first else None))
        return len(self.images) - 1

    def fetch(self, url: str) -> bytes:
        if not Conf.OPENAI_IMAGE_URLS:
            raise Refusal(NO_REMOTE_IMAGES, field="messages")
        data = fetch_image(url, self.budget)
        self.budget -= len(data)
        return data


def decode_data_url(url: str) -> bytes:
    """A data: URL's bytes, decoded strictly (as Ollama does); anything else is an invalid image."""
    match = DATA_URL.fullmatch(url)
    if match is None:
        raise Refusal(INVALID_IMAGE, field="messages")
    try:
        return base64.b64decode(match[1].replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(INVALID_IMAGE, field="messages") from None


def job_options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's sampling fields as Ollama's chat takes them: {"options": {...}, "format": ...}."""
    options: dict[str, Any] = {}
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        if body.get(name) is not None:
            options["num_predict"] = whole_number(body[name], name, minimum=1)
            break
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            options[name] = number(body[name], name)
    if body.get("seed") is not None:
        options["seed"] = whole_number(body["seed"], "seed")
    if body.get("stop") is not None:
        options["stop"] = stop_words(body["stop"])
    chat: dict[str, Any] = {"options": options} if options else {}
    answer_format = response_format(body.get("response_format"))
    if answer_format is not None:
        chat["format"] = answer_format
    return chat


def whole_number(value: Any, name: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        at_least = f" of at least {minimum}" if minimum is not None else ""
        raise Refusal(f"{name} must be a whole number{at_least}", field=name)
    return value


def number(value: Any, name: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Refusal(f"{name} must be a number", field=name)
    return value


def stop_words(value: Any) -> list[str]:
    words = [value] if isinstance(value, str) else value
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise Refusal("stop must be a string or a list of strings", field="stop")
    return words


def response_format(value: Any) -> str | dict[str, Any] | None:
    """Ollama's format: "json" for json_object, the schema itself for json_schema, nothing for text."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        described = value.get("json_schema")
        schema = described.get("schema") if isinstance(described, dict) else None
        if isinstance(schema, dict):
            return schema
        raise Refusal("response_format.json_schema.schema must be a JSON schema object", field="response_format")
    raise Refusal("response_format.type must be text, json_object or json_schema", field="response_format")


# --- fetching remote images -------------------------------------------------------


def fetch_image(url: str, budget: int) -> bytes:
    """GET an image as callbacks are sent: to checked public addresses only (any, with
    CALLBACK_ALLOW_PRIVATE), following a few redirects, each checked, within FETCH_SECONDS and budget."""
    deadline = time.monotonic() + FETCH_SECONDS
    with httpx.Client(
        timeout=FETCH_SECONDS, trust_env=False, follow_redirects=False, verify=client_context()
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            fetched = fetch_once(client, url, budget, deadline)
            if isinstance(fetched, bytes):
                return fetched
            url = fetched
    raise Refusal(f"The image URL redirected more than {MAX_REDIRECTS} times", field="messages")


def fetch_once(client: httpx.Client, url: str, budget: int, deadline: float) -> bytes | str:
    """The image at the URL, or the URL a redirect points to."""
    try:
        address = check_destination(url)[0]
    except CallbackRefused as error:
        raise Refusal(f"The image URL is not allowed: {error}", field="messages") from None
    target = httpx.URL(url)
    # Connect to the checked address, not to what the name resolves to now (DNS rebinding).
    request = client.build_request(
        "GET",
        target.copy_with(host=address),
        headers={"Host": target.netloc.decode("ascii"), "Accept": "image/*"},
        extensions={"sni_hostname": target.raw_host.decode("ascii")},
    )
    try:
        response = client.send(request, stream=True)
        try:
            if response.is_redirect:
                return str(target.join(response.headers["Location"]))
            if not response.is_success:
                raise Refusal(f"The image URL answered HTTP {response.status_code}", field="messages")
            return read_limited(response, budget, deadline)
        finally:
            response.close()
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise Refusal(
            f"The image URL could not be fetched: {error or type(error).__name__}", field="messages"
        ) from None


def read_limited(response: httpx.Response, budget: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > budget:
        raise too_large()
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > budget:
            raise too_large()
        if time.monotonic() > deadline:
            raise Refusal(f"The image URL took more than {FETCH_SECONDS:g} s to send the image", field="messages")
    return bytes(data)


def too_large() -> ImageRejected:
    limit = Conf.MAX_UPLOAD_BYTES // 2**20
    return ImageRejected(f"The images of one request may be {limit} MB in all", 413, "ImageTooLarge")


# --- answering --------------------------------------------------------------------


def completion(job: Job) -> dict[str, Any]:
    """The chat.completion of a completed job."""
    body = head(job, "chat.completion")
    message = {"role": "assistant", "content": job.output}
    body["choices"] = [{"index": 0, "message": message, "finish_reason": finish_reason(job)}]
    if (counted := usage(job)) is not None:
        body["usage"] = counted
    return body


def head(job: Job, kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{job.pk}",
        "object": kind,
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": FINGERPRINT,
    }


def finish_reason(job: Job) -> str:
    """The choice's finish_reason: "length" when Ollama stopped at num_predict (its done_reason), else "stop"."""
    result = job.result if isinstance(job.result, dict) else {}
    return "length" if result.get("done_reason") == "length" else "stop"


def usage(job: Job) -> dict[str, int] | None:
    """Token counts, when the backend reported them (Florence-2 and the OCR do not)."""
    if job.prompt_tokens is None and job.completion_tokens is None:
        return None
    prompt, completion_tokens = job.prompt_tokens or 0, job.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def failure(job: Job) -> str:
    if job.finished:
        return job.error or f"The job was {job.state.lower()}"
    return f"The job did not finish within {Conf.SYNC_WAIT_SECONDS:g} s"


async def stream_completion(job: Job, include_usage: bool) -> AsyncIterator[bytes]:
    """The role chunk, a chunk per piece the backend sends, the finish chunk, the usage chunk
    if asked for, then [DONE]; or, if the job fails, one error event and the end."""
    yield event(chunk(job, {"role": "assistant", "content": ""}))
    feed = TextFeed(job)
    async for piece in feed:
        yield event(chunk(job, {"content": piece}))
    job = feed.job
    if job.state != State.COMPLETED:
        yield event(error_body(500, failure(job)))
        return
    if rest := feed.rest():
        yield event(chunk(job, {"content": rest}))
    yield event(chunk(job, {}, finish_reason(job)))
    if include_usage:
        yield event(head(job, "chat.completion.chunk") | {"choices": [], "usage": usage(job)})
    yield b"data: [DONE]\n\n"


def chunk(job: Job, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return head(job, "chat.completion.chunk") | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def refusal_error(refusal: Refusal) -> JsonResponse:
    """A Refusal in OpenAI's shape; an unknown model has OpenAI's code for it."""
    code = "model_not_found" if refusal.status == 404 else None
    param = PARAMS.get(refusal.field, refusal.field) or None
    return openai_error(refusal.status, refusal.message, code, param)

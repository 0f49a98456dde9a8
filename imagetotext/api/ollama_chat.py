"""Ollama's POST /api/chat (protocols.md A.3): a chat about images, answered like Ollama answers it.

Every image of every message becomes one of the job's images, in the order they appear; the
job keeps the messages with each one's images as positions among them (imagetotext.jobs).
"""

from __future__ import annotations

from typing import Any

from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from agents.clients.ollama import CHAT_KEYS
from imagetotext.api.auth import ApiRequest, api_view
from imagetotext.api.ollama_compat import (
    ReplyShape,
    decode_image,
    ollama_answer,
    ollama_error,
    read_images,
    stream_flag,
    with_error_member,
)
from imagetotext.api.wire import check_text, json_body, lower_keys, methods, text_field
from imagetotext.conf import Conf
from imagetotext.db_threads import arun
from imagetotext.errors import Refusal
from imagetotext.jobs import JobRequest, create_with_upload, validate
from imagetotext.models import Api, Job

CHAT = ReplyShape(lambda text: {"message": {"role": "assistant", "content": text}})
ROLES = ("system", "user", "assistant")
NO_TOOLS = "tools are not supported"


@csrf_exempt
@with_error_member
@methods("POST")
@api_view("OllamaChat")
async def ollama_chat(request: ApiRequest) -> HttpResponseBase:
    """POST /api/chat: streams by default, like Ollama; at least one message must carry an image."""
    try:
        body = lower_keys(json_body(request))
        stream = stream_flag(body, default=True)
        job = await arun(accept_chat, request, body)
    except Refusal as refusal:
        return ollama_error(refusal)
    return await ollama_answer(job, stream, CHAT)


def accept_chat(request: ApiRequest, body: dict[str, Any]) -> Job:
    """Turn an Ollama chat request into a job that runs here (it is answered on this connection)."""
    model = text_field(body, "model", 200)
    if not model:
        raise Refusal("model is required", field="model")
    if body.get("tools"):
        raise Refusal(NO_TOOLS, field="tools")
    messages, images = read_messages(body.get("messages"))
    if not images:
        raise Refusal(
            "The chat holds no image; this server turns images into text, so send at least one in a message's images",
            field="messages",
        )
    uploads = read_images([decode_image(text) for text in images], queued=False)
    job_request = JobRequest(
        owner=request.owner,
        api_key=request.api_key,
        api=Api.OLLAMA_CHAT,
        model=model,
        prompt=last_user_content(messages),
        options={key: body[key] for key in CHAT_KEYS if key in body},
        image_count=len(uploads),
        messages=messages,
    )
    return create_with_upload(validate(job_request), uploads[0], hand_to_workers=False, more=uploads[1:])


def read_messages(value: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat's messages as a job keeps them, and every message's images (still base64) in order."""
    if not isinstance(value, list) or not value:
        raise Refusal("messages must be a list of chat messages", field="messages")
    messages: list[dict[str, Any]] = []
    images: list[Any] = []
    for index, item in enumerate(value):
        message, own_images = read_message(index, item)
        if own_images:
            message["images"] = list(range(len(images), len(images) + len(own_images)))
            images.extend(own_images)
        messages.append(message)
    if len(images) > Conf.MAX_IMAGES_PER_REQUEST:
        raise Refusal(f"A chat may hold at most {Conf.MAX_IMAGES_PER_REQUEST} images", field="messages")
    return messages, images


def read_message(index: int, item: Any) -> tuple[dict[str, Any], list[Any]]:
    """One message's role and content, and its images; tool messages and tool calls are refused."""
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise Refusal(f"{where} must be an object", field="messages")
    item = lower_keys(item)
    role, content, images = item.get("role"), item.get("content", ""), item.get("images") or []
    if not isinstance(role, str):
        raise Refusal(f"{where}.role must be a string", field="messages")
    role = role.strip().lower()
    if role == "tool" or item.get("tool_calls"):
        raise Refusal(NO_TOOLS, field="messages")
    if role not in ROLES:
        raise Refusal(f"{where}.role must be system, user or assistant, not {role!r}", field="messages")
    if not isinstance(content, str):
        raise Refusal(f"{where}.content must be a string", field="messages")
    check_text(content, f"{where}.content", field="messages")
    if not isinstance(images, list):
        raise Refusal(f"{where}.images must be a list of base64 strings", field="images")
    return {"role": role, "content": content}, images


def last_user_content(messages: list[dict[str, Any]]) -> str:
    """What the chat asks now: the last user message (the job's prompt in the history and on the page)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")

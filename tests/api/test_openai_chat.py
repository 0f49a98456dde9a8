"""POST /v1/chat/completions: OpenAI's request turned into a chat job, and the job's text into OpenAI's answer."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from PIL import Image

from agents.models import Agent
from imagetotext.conf import Conf
from imagetotext.models import Api, ApiKey, Job, State, StoredImage
from tests.fakes.ollama import CHUNKS_BEFORE_FAILURE, FakeOllama
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"


def png(colour: str = "red", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def image_part(url: str, detail: str | None = None) -> dict[str, Any]:
    image_url: dict[str, Any] = {"url": url} | ({"detail": detail} if detail else {})
    return {"type": "image_url", "image_url": image_url}


def user(text: str, *colours: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    return {"role": "user", "content": parts + [image_part(data_url(png(colour))) for colour in colours]}


def post(client: Client, body: object):
    return client.post(URL, json.dumps(body), content_type="application/json")


def ask(client: Client, model: str = "llava:7b", text: str = "What is it?", **fields: object):
    return post(client, {"model": model, "messages": [user(text, "red")], **fields})


def sent_chats(fake_ollama) -> list[dict[str, Any]]:
    return [r.json for r in fake_ollama.requests if r.path == "/api/chat"]


def colours_of(images: list[str]) -> list[tuple[int, ...]]:
    decoded = [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in images]
    return [im.getpixel((0, 0)) for im in decoded]  # type: ignore[misc]


def events(response) -> list[Any]:
    """The server-sent events of a streamed reply: each data line's JSON, or the text [DONE]."""
    assert response.streaming
    text = async_to_sync(read_all)(response).decode()
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(frame.startswith("data: ") for frame in frames), frames
    return [frame[6:] if frame == "data: [DONE]" else json.loads(frame[6:]) for frame in frames]


async def read_all(response) -> bytes:
    return b"".join([piece async for piece in response.streaming_content])


def openai_error_of(response) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- the request as Ollama's chat gets it -------------------------------------------


@pytest.mark.usefixtures("jobs_run_inline")
def test_each_message_reaches_ollamas_chat_with_its_own_images_in_order(api_client, ollama_agent, fake_ollama) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        user("This one?", "red"),
        {"role": "assistant", "content": "A red square."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And these,"},
                image_part(data_url(png("blue")), detail="low"),
                {"type": "text", "text": "side by side?"},
                {"type": "image_url", "image_url": data_url(png("lime"))},  # a bare string, as Ollama takes it
            ],
        },
    ]

    post(api_client, {"model": "llava:7b", "messages": messages})

    [sent] = sent_chats(fake_ollama)
    assert sent["model"] == "llava:7b" and sent["stream"] is True
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "Be brief."),
        ("user", "This one?"),
        ("assistant", "A red square."),
        ("user", "And these,\nside by side?"),
    ]
    assert "images" not in sent["messages"][0] and "images" not in sent["messages"][2]
    assert colours_of(sent["messages"][1]["images"]) == [(255, 0, 0)]
    assert colours_of(sent["messages"][3]["images"]) == [(0, 0, 255), (0, 255, 0)]
    job = Job.objects.get()
    assert (job.api, job.prompt, job.image_count) == (Api.OPENAI_CHAT, "And these,\nside by side?", 3)
    assert [m.get("images") for m in job.messages] == [None, [0], None, [1, 2]]


@pytest.mark.usefixtures("jobs_run_inline")
def test_sampling_fields_become_ollamas_options(api_client, ollama_agent, fake_ollama) -> None:
    ask(api_client, max_tokens=50, temperature=0.2, top_p=0.9, seed=7, stop="END")

    [sent] = sent_chats(fake_ollama)
    assert sent["options"] == {"num_predict": 50, "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["END"]}
    assert "format" not in sent
    assert Job.objects.get().options == {"options": sent["options"]}


@pytest.mark.usefixtures("jobs_run_inline")
def test_max_completion_tokens_wins_over_max_tokens_and_a_stop_list_is_kept(
    api_client, ollama_agent, fake_ollama
) -> None:
    ask(api_client, max_tokens=50, max_completion_tokens=20, stop=["a", "b"])

    [sent] = sent_chats(fake_ollama)
    assert sent["options"] == {"num_predict": 20, "stop": ["a", "b"]}


@pytest.mark.usefixtures("jobs_run_inline")
@pytest.mark.parametrize(
    ("response_format", "sent_format"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "object", "required": ["a"]}}},
            {"type": "object", "required": ["a"]},
        ),
    ],
)
def test_a_response_format_becomes_ollamas_format(
    api_client, ollama_agent, fake_ollama, response_format, sent_format
) -> None:
    ask(api_client, response_format=response_format)

    [sent] = sent_chats(fake_ollama)
    assert sent["format"] == sent_format
    assert "options" not in sent
    assert Job.objects.get().options == {"format": sent_format}


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_text_response_format_and_n_of_1_change_nothing(api_client, ollama_agent, fake_ollama) -> None:
    ask(api_client, response_format={"type": "text"}, n=1)

    [sent] = sent_chats(fake_ollama)
    assert "format" not in sent and "options" not in sent


# --- answers -------------------------------------------------------------------------


@pytest.mark.usefixtures("jobs_run_inline")
def test_an_ollama_chat_answers_a_chat_completion_with_its_usage(api_client, ollama_agent, fake_ollama) -> None:
    response = ask(api_client, text="What colour is it?")

    assert response.status_code == 200
    body = response.json()
    job = Job.objects.get()
    assert job.state == State.COMPLETED, job.error
    assert (body["id"], body["object"], body["model"]) == (f"chatcmpl-{job.pk}", "chat.completion", "llava:7b")
    assert body["created"] == int(job.created_at.timestamp())
    assert body["system_fingerprint"] == "fp_imagetotext"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": fake_ollama.reply_for("llava:7b", "What colour is it?")},
            "finish_reason": "stop",
        }
    ]
    assert job.prompt_tokens and job.completion_tokens
    assert body["usage"] == {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.prompt_tokens + job.completion_tokens,
    }


@pytest.mark.usefixtures("jobs_run_inline")
def test_finish_reason_is_length_when_ollama_stopped_at_num_predict(api_client, ollama_agent) -> None:
    from imagetotext.api.openai_chat import completion

    ask(api_client, max_tokens=3)
    job = Job.objects.get()
    assert completion(job)["choices"][0]["finish_reason"] == "stop"

    job.result = {**job.result, "done_reason": "length"}

    assert completion(job)["choices"][0]["finish_reason"] == "length"


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_stream_sends_each_piece_ollama_sends_as_its_own_chunk(api_client, ollama_agent, fake_ollama) -> None:
    response = ask(api_client, text="Stream it", stream=True)

    assert response["Content-Type"] == "text/event-stream"
    frames = events(response)
    reply = fake_ollama.reply_for("llava:7b", "Stream it")
    assert frames[-1] == "[DONE]"
    role, *pieces, finish = frames[:-1]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [p["choices"][0]["delta"]["content"] for p in pieces]
    assert "".join(texts) == reply and len(texts) == len(reply.split())  # the fake sends a word per chunk
    assert {p["choices"][0]["finish_reason"] for p in pieces} == {None}
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert "usage" not in finish


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_stream_asked_for_its_usage_sends_a_usage_chunk_before_done(api_client, ollama_agent) -> None:
    frames = events(ask(api_client, stream=True, stream_options={"include_usage": True}))

    usage_chunk = frames[-2]
    job = Job.objects.get()
    assert frames[-1] == "[DONE]" and frames[-3]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["object"] == "chat.completion.chunk" and usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.prompt_tokens + job.completion_tokens,
    }


@pytest.mark.usefixtures("jobs_run_inline")
def test_an_error_mid_stream_follows_the_pieces_already_sent(api_client, ollama_agent, fake_ollama) -> None:
    fake_ollama.mode = "midstream_error"

    frames = events(ask(api_client, text="Break", stream=True))

    reply = fake_ollama.reply_for("llava:7b", "Break")
    texts = [f["choices"][0]["delta"]["content"] for f in frames[1:-1]]
    assert len(texts) == CHUNKS_BEFORE_FAILURE and reply.startswith("".join(texts))
    job = Job.objects.get()
    assert job.state == State.FAILED
    assert frames[-1] == {"error": {"message": job.error, "type": "api_error", "param": None, "code": None}}
    assert "[DONE]" not in frames


@pytest.mark.usefixtures("jobs_run_inline")
def test_florence_reads_the_image_and_answers_a_chat_completion(api_client, comfy_agent, fake_comfyui) -> None:
    response = ask(api_client, model="microsoft/Florence-2-base", text="ignored by Florence")

    assert response.status_code == 200
    body = response.json()
    job = Job.objects.get()
    assert body == {
        "id": f"chatcmpl-{job.pk}",
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": "microsoft/Florence-2-base",
        "system_fingerprint": "fp_imagetotext",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": fake_comfyui.caption_for("more_detailed_caption")},
                "finish_reason": "stop",
            }
        ],
    }
    assert job.messages == [] and job.prompt == ""  # Florence's default task takes no text


@pytest.mark.usefixtures("jobs_run_inline")
def test_florence_streams_role_text_finish_and_done_chunks(api_client, comfy_agent, fake_comfyui) -> None:
    response = ask(api_client, model="microsoft/Florence-2-base", stream=True)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    frames = events(response)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    job = Job.objects.get()
    assert {c["id"] for c in chunks} == {f"chatcmpl-{job.pk}"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-1])
    assert text == fake_comfyui.caption_for("more_detailed_caption")


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_failed_job_is_a_500_in_openais_shape(api_client, ollama_agent, fake_ollama) -> None:
    fake_ollama.mode = "500"

    response = ask(api_client)

    assert response.status_code == 500
    error = openai_error_of(response)
    assert error["type"] == "api_error" and error["message"] == Job.objects.get().error != ""
    assert Job.objects.get().state == State.FAILED


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_job_that_fails_while_streaming_ends_with_one_error_event(api_client, ollama_agent, fake_ollama) -> None:
    fake_ollama.mode = "500"

    frames = events(ask(api_client, stream=True))

    assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "[DONE]" not in frames
    assert frames[-1] == {
        "error": {"message": Job.objects.get().error, "type": "api_error", "param": None, "code": None}
    }


# --- refusals --------------------------------------------------------------------------


def test_a_call_without_a_key_is_a_401_in_openais_shape(ollama_agent) -> None:
    response = ask(Client())

    assert response.status_code == 401
    assert openai_error_of(response) == {
        "message": "A valid API key is required",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_a_key_restricted_to_other_apis_is_a_403(api_user, ollama_agent) -> None:
    key = ApiKey.issue(api_user, "images only", restrict_to=["ImageToText"])[1]

    response = ask(Client(HTTP_AUTHORIZATION=f"Bearer {key}"))

    assert response.status_code == 403
    assert openai_error_of(response)["type"] == "permission_error"
    assert "OpenAiChat" in openai_error_of(response)["message"]


def test_get_is_a_405_naming_post(api_client) -> None:
    response = api_client.get(URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert openai_error_of(response)["type"] == "api_error"


def test_a_caller_over_the_rate_limit_gets_a_429(api_client, ollama_agent, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "RATE_LIMIT_PER_MINUTE", 1)
    post(api_client, {})

    response = ask(api_client)

    assert response.status_code == 429
    assert openai_error_of(response)["type"] == "rate_limit_error"
    assert int(response["Retry-After"]) >= 1


def test_an_unknown_model_is_a_404_model_not_found(api_client, ollama_agent) -> None:
    response = ask(api_client, model="nope:1b")

    assert response.status_code == 404
    assert openai_error_of(response) == {
        "message": "Model nope:1b not found",
        "type": "not_found_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert not Job.objects.exists() and not StoredImage.objects.exists()


def test_a_model_no_active_agent_offers_keeps_its_405(api_client, ollama_agent) -> None:
    Agent.objects.update(enabled=False)

    response = ask(api_client)

    assert response.status_code == 405
    error = openai_error_of(response)
    assert error["message"] == "No active agent supports the model llava:7b"
    assert (error["type"], error["param"]) == ("api_error", "model")


def test_a_text_only_model_is_refused(api_client, ollama_agent) -> None:
    response = ask(api_client, model="llama3.2:3b")

    assert response.status_code == 400
    assert openai_error_of(response)["message"] == "The model llama3.2:3b cannot read images"


def test_several_images_for_florence_are_the_400_of_a_one_image_model(api_client, comfy_agent) -> None:
    response = post(api_client, {"model": "microsoft/Florence-2-base", "messages": [user("Both?", "red", "blue")]})

    assert response.status_code == 400
    error = openai_error_of(response)
    assert "reads one image per request" in error["message"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")
    assert not Job.objects.exists() and not StoredImage.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,not*base64",
        "data:image/png;base64,iVBORw0KGgo",  # cut short: bad padding
        "data:text/plain;base64,aGVsbG8=",
        "iVBORw0KGgoAAAANSUhEUg==",  # raw base64 without the data: prefix
        "ftp://example.com/a.png",
    ],
)
def test_an_image_url_that_is_not_a_base64_data_url_is_invalid_image_input(api_client, ollama_agent, url) -> None:
    response = post(api_client, {"model": "llava:7b", "messages": [{"role": "user", "content": [image_part(url)]}]})

    assert response.status_code == 400
    assert openai_error_of(response) == {
        "message": "invalid image input",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }


def test_a_data_url_that_is_not_an_image_is_refused_by_the_image_check(api_client, ollama_agent) -> None:
    url = data_url(b"just some text, not pixels")
    response = post(api_client, {"model": "llava:7b", "messages": [{"role": "user", "content": [image_part(url)]}]})

    assert response.status_code == 400
    assert openai_error_of(response)["message"].startswith("The file is not an image in an accepted format")


def test_an_image_over_the_size_limit_is_a_413(api_client, ollama_agent, monkeypatch) -> None:
    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", len(png("red")) - 1)

    response = post(api_client, {"model": "llava:7b", "messages": [user("Big?", "red")]})

    assert response.status_code == 413
    assert openai_error_of(response)["type"] == "invalid_request_error"
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ({"messages": [user("x", "red")]}, "model is required", "model"),
        ({"model": "llava:7b", "messages": []}, "[] is too short - 'messages'", "messages"),
        ({"model": "llava:7b", "messages": "hi"}, "messages must be a list of messages", "messages"),
        (
            {"model": "llava:7b", "messages": [{"role": "user", "content": "No picture"}]},
            "At least one image is required: send it as an image_url part of a message",
            "messages",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red"), {"role": "tool", "content": "42"}]},
            "Tool and function messages are not supported here",
            "messages",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "tools": [{"type": "function"}]},
            "Tools and functions are not supported here",
            "tools",
        ),
        ({"model": "llava:7b", "messages": [user("x", "red")], "n": 2}, "Only one choice (n=1) is supported", "n"),
        (
            {"model": "llava:7b", "messages": [{"role": "robot", "content": [image_part(data_url(png()))]}]},
            "Unknown role 'robot': use system, developer, user or assistant",
            "messages",
        ),
        (
            {"model": "llava:7b", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "A text part's text must be a string",
            "messages",
        ),
        (
            {"model": "llava:7b", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "Unsupported content part 'input_audio': use text or image_url parts",
            "messages",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "max_tokens": "many"},
            "max_tokens must be a whole number of at least 1",
            "max_tokens",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "temperature": "hot"},
            "temperature must be a number",
            "temperature",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "stop": [1]},
            "stop must be a string or a list of strings",
            "stop",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "response_format": {"type": "xml"}},
            "response_format.type must be text, json_object or json_schema",
            "response_format",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "response_format": {"type": "json_schema"}},
            "response_format.json_schema.schema must be a JSON schema object",
            "response_format",
        ),
        (
            {"model": "llava:7b", "messages": [user("x", "red")], "stream": "yes"},
            "stream must be true or false",
            "stream",
        ),
    ],
)
def test_a_request_it_cannot_serve_is_a_400_naming_the_field(api_client, ollama_agent, body, message, param) -> None:
    response = post(api_client, body)

    assert response.status_code == 400
    assert openai_error_of(response) == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }
    assert not Job.objects.exists() and not StoredImage.objects.exists()


def test_a_body_larger_than_django_reads_is_a_413_in_openais_shape(api_client, ollama_agent, settings) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = post(api_client, {"model": "llava:7b", "messages": [user("x" * 2000, "red")]})

    assert response.status_code == 413
    error = openai_error_of(response)
    assert error["type"] == "invalid_request_error" and "larger than the 1000 bytes" in error["message"]


def test_a_body_that_is_not_json_is_a_400(api_client) -> None:
    response = api_client.post(URL, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert openai_error_of(response)["message"].startswith("The body is not valid JSON")


# --- remote image URLs ----------------------------------------------------------------


class ImageHost(BaseHTTPRequestHandler):
    """Serves /red.png, /blue.png, a redirect to /blue.png, a large file and a 404."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/blue.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"/red.png": png("red"), "/blue.png": png("blue"), "/big.png": png("red", (400, 400)) + b"\0" * 50_000}
        data = body.get(self.path)
        self.send_response(200 if data else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def image_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def remote_images_allowed(monkeypatch) -> None:
    monkeypatch.setattr(Conf, "OPENAI_IMAGE_URLS", True)
    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", True)  # the test host is on loopback


def ask_with_urls(client: Client, *urls: str):
    content = [{"type": "text", "text": "What is it?"}, *(image_part(url) for url in urls)]
    return post(client, {"model": "llava:7b", "messages": [{"role": "user", "content": content}]})


def test_remote_image_urls_are_refused_unless_the_administrator_allows_them(api_client, ollama_agent, image_host):
    response = ask_with_urls(api_client, image_host + "/red.png")

    assert response.status_code == 400
    error = openai_error_of(response)
    assert error["message"].startswith("image URLs are not currently supported, please use base64 encoded data")
    assert "OPENAI_IMAGE_URLS" in error["message"]


@pytest.mark.usefixtures("jobs_run_inline", "remote_images_allowed")
def test_allowed_remote_images_are_fetched_redirects_included(api_client, ollama_agent, fake_ollama, image_host):
    ask_with_urls(api_client, image_host + "/red.png", image_host + "/moved")

    [sent] = sent_chats(fake_ollama)
    assert colours_of(sent["messages"][0]["images"]) == [(255, 0, 0), (0, 0, 255)]
    assert Job.objects.get().image_count == 2


def test_a_remote_image_on_a_private_address_is_refused_without_callback_allow_private(
    api_client, ollama_agent, image_host, monkeypatch
) -> None:
    monkeypatch.setattr(Conf, "OPENAI_IMAGE_URLS", True)

    response = ask_with_urls(api_client, image_host + "/red.png")

    assert response.status_code == 400
    assert openai_error_of(response)["message"] == (
        "The image URL is not allowed: 127.0.0.1 resolves to 127.0.0.1, which is not a public address"
    )


@pytest.mark.usefixtures("remote_images_allowed")
def test_a_remote_image_that_is_missing_is_a_400(api_client, ollama_agent, image_host) -> None:
    response = ask_with_urls(api_client, image_host + "/gone.png")

    assert response.status_code == 400
    assert openai_error_of(response)["message"] == "The image URL answered HTTP 404"


@pytest.mark.usefixtures("remote_images_allowed")
def test_remote_images_larger_than_the_limit_together_are_a_413(api_client, ollama_agent, image_host, monkeypatch):
    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", len(png("red")) * 3 // 2)

    assert ask_with_urls(api_client, image_host + "/big.png").status_code == 413
    response = ask_with_urls(api_client, image_host + "/red.png", image_host + "/red.png")

    assert response.status_code == 413
    assert openai_error_of(response)["message"].startswith("The images of one request may be")
    assert not Job.objects.exists()


# --- the official openai client against the real server -----------------------------


@pytest.fixture(scope="module")
def live_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(chunk_delay=0.02) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_ollama: FakeOllama) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("openai"), OLLAMA_URLS=live_ollama.url, LOCAL_AGENT="0") as running:
        yield running


@pytest.fixture(scope="module")
def openai_client(server: LiveServer) -> openai.OpenAI:
    key = server.manage("createapikey", "openai", "--owner", "admin").strip()
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def user_content(text: str, colour: str = "navy") -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}, image_part(data_url(png(colour)))]


@pytest.mark.slow
def test_the_openai_client_gets_a_completion(openai_client, live_ollama) -> None:
    completion = openai_client.chat.completions.create(
        model="llava:7b", messages=[{"role": "user", "content": user_content("Describe it")}]
    )

    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.choices[0].message.content == live_ollama.reply_for("llava:7b", "Describe it")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > completion.usage.completion_tokens > 0


@pytest.mark.slow
def test_the_openai_client_streams_one_chunk_per_backend_chunk(openai_client, live_ollama) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model="gemma3:4b",
            messages=[{"role": "user", "content": user_content("Stream it")}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    reply = live_ollama.reply_for("gemma3:4b", "Stream it")
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == reply and len(texts) == len(reply.split())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.slow
def test_the_openai_client_lists_the_models(openai_client) -> None:
    ids = {model.id for model in openai_client.models.list()}

    assert {"llava:7b", "gemma3:4b"} <= ids


@pytest.mark.slow
def test_the_openai_client_raises_not_found_for_an_unknown_model(openai_client) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.chat.completions.create(
            model="nope:1b", messages=[{"role": "user", "content": user_content("x")}]
        )

    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found" and raised.value.param == "model"


@pytest.mark.slow
def test_the_openai_client_raises_bad_request_for_an_invalid_image(openai_client) -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]

    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.chat.completions.create(model="llava:7b", messages=[{"role": "user", "content": content}])

    assert raised.value.message.endswith("invalid image input")
    assert raised.value.type == "invalid_request_error"

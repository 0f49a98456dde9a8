"""Ollama's POST /api/chat, and several images on /api/generate: shapes, images reaching the backend, refusals."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import ollama
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from PIL import Image

from agents.models import Agent, AgentModel, Capability, Kind
from imagetotext.models import Api, Job, State, StoredImage
from tests.fakes.ollama import FakeOllama
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.django_db(transaction=True)


def png(colour: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def b64(colour: str = "red") -> str:
    return base64.b64encode(png(colour)).decode()


def user(content: str, *colours: str) -> dict[str, Any]:
    return {"role": "user", "content": content, "images": [b64(colour) for colour in colours]}


def post(client: Client, path: str, **body: object):
    return client.post(path, json.dumps(body), content_type="application/json")


def chat(client: Client, model: str = "llava:7b", messages: list | None = None, **fields: object):
    return post(client, "/api/chat", model=model, messages=messages or [user("What is it?", "red")], **fields)


def ndjson(response) -> list[dict[str, Any]]:
    assert response.streaming and response["Content-Type"] == "application/x-ndjson"
    text = async_to_sync(read_all)(response).decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def read_all(response) -> bytes:
    return b"".join([piece async for piece in response.streaming_content])


def colours_of(images: list[str]) -> list[tuple[int, ...]]:
    decoded = [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in images]
    return [im.getpixel((0, 0)) for im in decoded]  # type: ignore[misc]


def sent(fake_ollama, path: str = "/api/chat") -> dict[str, Any]:
    [body] = [r.json for r in fake_ollama.requests if r.path == path]
    return body


def assert_refused(response, status: int, text: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert text in body["error"]
    assert body["responseStatus"]["message"] == body["error"]
    assert Job.objects.count() == 0 and StoredImage.objects.count() == 0


# --- the chat's replies ----------------------------------------------------------


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_streamed_chat_sends_a_line_per_backend_piece_then_the_done_line(api_client, ollama_agent, fake_ollama):
    response = chat(api_client, messages=[user("Describe it", "red")])

    assert response.status_code == 200
    lines = ndjson(response)
    expected = fake_ollama.reply_for("llava:7b", "Describe it")
    pieces, final = lines[:-1], lines[-1]
    assert len(pieces) == len(expected.split())  # the fake sends one chunk per word
    assert all(set(line) == {"model", "created_at", "message", "done"} and not line["done"] for line in pieces)
    assert all(line["message"]["role"] == "assistant" and line["created_at"].endswith("Z") for line in pieces)
    assert "".join(line["message"]["content"] for line in pieces) == expected
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done"] is True and final["done_reason"] == "stop" and final["model"] == "llava:7b"
    assert final["eval_count"] == len(pieces) and final["total_duration"] > 0
    assert "context" not in final


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_chat_without_streaming_answers_one_object_with_the_metrics(api_client, ollama_agent, fake_ollama):
    response = chat(api_client, "gemma3:4b", [user("Name the colour", "red")], stream=False)

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": fake_ollama.reply_for("gemma3:4b", "Name the colour")}
    assert (body["model"], body["done"], body["done_reason"]) == ("gemma3:4b", True, "stop")
    assert body["prompt_eval_count"] > 0 and body["eval_count"] > 0 and "context" not in body
    assert "response" not in body


@pytest.mark.usefixtures("jobs_run_inline")
def test_every_messages_images_reach_ollamas_chat_in_order(api_client, ollama_agent, fake_ollama):
    messages = [
        {"role": "System", "content": "Be brief."},
        user("This one?", "red"),
        {"role": "ASSISTANT", "content": "A red square."},
        user("And these two?", "blue", "lime"),
    ]

    response = chat(api_client, messages=messages, stream=False)

    assert response.status_code == 200
    body = sent(fake_ollama)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in body["messages"]] == ["Be brief.", "This one?", "A red square.", "And these two?"]
    assert "images" not in body["messages"][0] and "images" not in body["messages"][2]
    assert colours_of(body["messages"][1]["images"]) == [(255, 0, 0)]
    assert colours_of(body["messages"][3]["images"]) == [(0, 0, 255), (0, 255, 0)]
    assert response.json()["message"]["content"] == fake_ollama.reply_for("llava:7b", "And these two?")


@pytest.mark.usefixtures("jobs_run_inline")
def test_the_job_keeps_the_chat_the_last_question_and_the_chat_options(api_client, ollama_agent, fake_ollama):
    messages = [user("First?", "red"), {"role": "assistant", "content": "Red."}, user("Brighter?", "blue")]

    chat(
        api_client,
        messages=messages,
        stream=False,
        options={"temperature": 0},
        keep_alive="1m",
        format="json",
        system="dropped: a chat's system prompt is a message",
    )

    job = Job.objects.get()
    assert (job.api, job.state, job.prompt, job.image_count) == (Api.OLLAMA_CHAT, State.COMPLETED, "Brighter?", 2)
    assert [m.get("images") for m in job.messages] == [[0], None, [1]]
    assert job.options == {"options": {"temperature": 0}, "format": "json", "keep_alive": "1m"}
    body = sent(fake_ollama)
    assert (body["options"], body["keep_alive"], body["format"]) == ({"temperature": 0}, "1m", "json")
    assert "system" not in body


@pytest.mark.usefixtures("jobs_run_inline")
def test_the_chat_is_in_the_history_with_its_question(api_client, user_client, ollama_agent):
    chat(api_client, messages=[user("Which animal is drawn here?", "red")], stream=False)

    history = user_client.get("/ImageToText/history")

    assert history.status_code == 200
    assert "Which animal is drawn here?" in history.content.decode()
    assert list(Job.objects.values_list("api", flat=True)) == [Api.OLLAMA_CHAT]


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_chat_may_name_florence_which_reads_the_image_and_ignores_the_messages(api_client, comfy_agent, fake_comfyui):
    response = chat(api_client, "microsoft/Florence-2-base", [user("Ignored by Florence", "red")], stream=False)

    assert response.status_code == 200, response.content
    assert response.json()["message"]["content"] == fake_comfyui.caption_for("more_detailed_caption")
    job = Job.objects.get()
    assert (job.api, job.messages) == (Api.OLLAMA_CHAT, [])


# --- failures ----------------------------------------------------------------------


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_failure_mid_stream_ends_the_stream_with_one_error_line(api_client, ollama_agent, fake_ollama):
    fake_ollama.mode = "midstream_error"

    lines = ndjson(chat(api_client))

    assert lines[-1]["error"] and not any(line.get("done") for line in lines)
    assert [line for line in lines if "error" in line] == [lines[-1]]
    assert Job.objects.get().state == State.FAILED


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_failed_chat_without_streaming_is_a_500_with_an_ollama_error(api_client, ollama_agent, fake_ollama):
    fake_ollama.mode = "no_vision"

    response = chat(api_client, stream=False)

    assert response.status_code == 500
    assert "cannot read images" in response.json()["error"]


def test_a_chat_without_any_image_is_refused(api_client, ollama_agent):
    response = chat(api_client, messages=[{"role": "user", "content": "Hello"}])

    assert_refused(response, 400, "holds no image")


@pytest.mark.parametrize(
    ("fields", "status", "text"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools are not supported"),
        ({"messages": [{"role": "tool", "content": "42"}, user("x", "red")]}, 400, "tools are not supported"),
        ({"messages": [{"role": "wizard", "content": "x"}, user("x", "red")]}, 400, "system, user or assistant"),
        ({"messages": [{"role": "user", "content": 7, "images": [b64()]}]}, 400, "content must be a string"),
        ({"messages": "hello"}, 400, "messages must be a list"),
        ({"messages": [user("x", "red")], "model": ""}, 400, "model is required"),
        ({"model": "nope:1b"}, 404, "nope:1b not found"),
        ({"stream": "yes"}, 400, "stream must be true or false"),
        (
            {"messages": [{"role": "user", "content": "x", "images": ["data:image/png;base64," + b64()]}]},
            400,
            "illegal base64 data at input byte 4",
        ),
        ({"messages": [{"role": "user", "content": "x", "images": ["not*base64"]}]}, 400, "illegal base64 data"),
        ({"messages": [user("a", "red"), {"role": "user", "content": "b", "images": ["*"]}]}, 400, "illegal base64"),
        (
            {"messages": [{"role": "user", "content": "x", "images": [base64.b64encode(b"text").decode()]}]},
            400,
            "not an image in an accepted format",
        ),
    ],
)
def test_a_chat_the_server_cannot_serve_is_refused_before_anything_is_stored(
    api_client, ollama_agent, fields, status, text
):
    body: dict[str, Any] = {"model": "llava:7b", "messages": [user("What is it?", "red")], **fields}

    assert_refused(post(api_client, "/api/chat", **body), status, text)


def test_a_model_that_reads_one_image_refuses_a_chat_with_several(api_client, comfy_agent):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL, online=True)
    AgentModel.objects.create(agent=local, name="local/ocr", capability=Capability.OCR)

    for model in ("microsoft/Florence-2-base", "local/ocr"):
        response = chat(api_client, model, [user("a", "red"), user("b", "blue")])
        assert_refused(response, 400, "reads one image per request")


def test_a_chat_needs_a_key_and_says_so_in_ollamas_shape(client: Client):
    response = chat(client)

    assert response.status_code == 401
    assert response.json()["error"] == "A valid API key is required"
    assert client.get("/api/chat").json()["error"] == "GET is not allowed here"


# --- several images on generate ----------------------------------------------------


@pytest.mark.usefixtures("jobs_run_inline")
def test_generate_sends_several_images_to_a_vision_model_in_order(api_client, ollama_agent, fake_ollama):
    images = [b64("red"), b64("blue"), b64("lime")]

    response = post(api_client, "/api/generate", model="llava:7b", prompt="Compare", images=images, stream=False)

    assert response.status_code == 200, response.content
    assert response.json()["response"] == fake_ollama.reply_for("llava:7b", "Compare")
    assert colours_of(sent(fake_ollama, "/api/generate")["images"]) == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    job = Job.objects.get()
    assert (job.api, job.image_count, len(job.stored_images())) == (Api.OLLAMA_GENERATION, 3, 3)


@pytest.mark.usefixtures("jobs_run_inline")
def test_streamed_generate_with_two_images_keeps_its_shape(api_client, ollama_agent, fake_ollama):
    lines = ndjson(post(api_client, "/api/generate", model="gemma3:4b", prompt="Two", images=[b64("red"), b64("blue")]))

    assert "".join(line["response"] for line in lines) == fake_ollama.reply_for("gemma3:4b", "Two")
    assert lines[-1]["done"] is True and lines[-1]["context"] == [1, 2, 3]
    assert len(sent(fake_ollama, "/api/generate")["images"]) == 2


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_queued_generation_with_two_images_sends_both_when_it_runs(api_client, ollama_agent, fake_ollama):
    request = {"model": "llava:7b", "prompt": "Queued pair", "images": [b64("blue"), b64("red")]}

    queued = post(api_client, "/api/QueueOllamaGeneration", request=request, refId="pair-1")

    assert queued.status_code == 200, queued.content
    status = api_client.get("/api/GetOllamaGenerationStatus?RefId=pair-1").json()
    assert status["jobState"] == "Completed"
    assert colours_of(sent(fake_ollama, "/api/generate")["images"]) == [(0, 0, 255), (255, 0, 0)]


def test_generate_with_several_images_for_the_ocr_is_refused(api_client):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL, online=True)
    AgentModel.objects.create(agent=local, name="local/ocr", capability=Capability.OCR)

    response = post(api_client, "/api/generate", model="local/ocr", images=[b64("red"), b64("blue")])

    assert_refused(response, 400, "reads one image per request")


def test_generate_refuses_more_images_than_a_request_may_hold(api_client, ollama_agent):
    from imagetotext.conf import Conf

    images = [b64()] * (Conf.MAX_IMAGES_PER_REQUEST + 1)

    response = post(api_client, "/api/generate", model="llava:7b", prompt="x", images=images)

    assert_refused(response, 400, f"at most {Conf.MAX_IMAGES_PER_REQUEST} images")


# --- the official ollama client against the real server -------------------------


@pytest.fixture(scope="module")
def live_fake() -> Iterator[FakeOllama]:
    with FakeOllama(chunk_delay=0.02) as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, live_fake: FakeOllama) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("chat-live"), OLLAMA_URLS=live_fake.url, ADMIN_PASSWORD="pw-12345678"
    ) as s:
        yield s


@pytest.fixture(scope="module")
def ollama_client(server: LiveServer) -> ollama.Client:
    key = server.manage("createapikey", "chat", "--owner", "admin").strip()
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.mark.slow
def test_the_ollama_client_streams_a_chat_and_gets_every_chunk_the_backend_sent(ollama_client, live_fake) -> None:
    question = "What colour is this square, and how large is it?"
    expected = live_fake.reply_for("llava:7b", question)

    parts = list(
        ollama_client.chat(
            model="llava:7b", messages=[{"role": "user", "content": question, "images": [png("navy")]}], stream=True
        )
    )

    pieces, final = parts[:-1], parts[-1]
    assert len(pieces) == len(expected.split())  # the fake sent one chunk per word, and each came through
    assert not any(part.done for part in pieces) and final.done is True and final.done_reason == "stop"
    assert "".join(part.message.content or "" for part in parts) == expected
    assert final.eval_count == len(pieces)


@pytest.mark.slow
def test_the_ollama_client_chats_without_streaming_about_two_images(ollama_client, live_fake) -> None:
    messages = [
        {"role": "user", "content": "And this one?", "images": [png("red")]},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "Compare it with this.", "images": [png("blue")]},
    ]

    result = ollama_client.chat(model="gemma3:4b", messages=messages, stream=False)

    assert result.message.role == "assistant" and result.done is True
    assert result.message.content == live_fake.reply_for("gemma3:4b", "Compare it with this.")
    [body] = [r.json for r in live_fake.requests if r.path == "/api/chat" and r.json["model"] == "gemma3:4b"]
    assert [colours_of(m.get("images", [])) for m in body["messages"]] == [[(255, 0, 0)], [], [(0, 0, 255)]]


@pytest.mark.slow
def test_the_ollama_client_generates_from_two_images(ollama_client, live_fake) -> None:
    result = ollama_client.generate(
        model="llava:7b", prompt="Two squares", images=[png("lime"), png("red")], stream=False
    )

    assert result.response == live_fake.reply_for("llava:7b", "Two squares")
    [body] = [r.json for r in live_fake.requests if r.path == "/api/generate" and r.json["prompt"] == "Two squares"]
    assert colours_of(body["images"]) == [(0, 255, 0), (255, 0, 0)]


@pytest.mark.slow
def test_the_ollama_client_hears_why_a_chat_without_an_image_is_refused(ollama_client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        ollama_client.chat(model="llava:7b", messages=[{"role": "user", "content": "Hello"}], stream=False)

    assert raised.value.status_code == 400
    assert "holds no image" in raised.value.error

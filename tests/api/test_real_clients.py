"""Clients this project did not write, against the real server (daphne + workers) and fake backends.

ServiceStack's Python client with AI Server's DTOs, and the official ollama client.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest
from PIL import Image
from servicestack import JsonServiceClient, UploadFile
from servicestack.clients import WebServiceException

from tests.aiserver_dtos import (
    BackgroundJobState,
    GetTextGenerationStatus,
    ImageToText,
    QueueImageToText,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.ollama import FakeOllama
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOllama, FakeComfyUI]]:
    with FakeOllama(chunk_delay=0.02) as fake_ollama, FakeComfyUI(run_seconds=0.2) as fake_comfyui:
        yield fake_ollama, fake_comfyui


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fakes) -> Iterator[LiveServer]:
    fake_ollama, fake_comfyui = fakes
    data = tmp_path_factory.mktemp("live")
    with live_server(
        data, OLLAMA_URLS=fake_ollama.url, COMFYUI_URLS=fake_comfyui.url, ADMIN_PASSWORD="pw-12345678"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def key(server: LiveServer) -> str:
    return server.manage("createapikey", "clients", "--owner", "admin").strip()


@pytest.fixture
def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def servicestack_client(server: LiveServer, key: str) -> JsonServiceClient:
    client = JsonServiceClient(server.url)
    client.bearer_token = key
    return client


def test_servicestack_client_converts_an_image_with_florence(server, key, fakes, png) -> None:
    client = servicestack_client(server, key)

    response = client.post_file_with_request(
        ImageToText(),
        UploadFile(field_name="image", file_name="a.png", content_type="image/png", stream=io.BytesIO(png)),
    )

    assert response.results[0].text == fakes[1].caption_for("more_detailed_caption")
    assert response.duration is not None and response.duration.total_seconds() > 0


def test_servicestack_client_uses_an_ollama_model_and_prompt(server, key, fakes, png) -> None:
    client = servicestack_client(server, key)

    response = client.post_file_with_request(
        ImageToText(model="llava:7b", prompt="What colour is it?"),
        UploadFile(field_name="image", file_name="a.png", content_type="image/png", stream=io.BytesIO(png)),
    )

    assert response.results[0].text == fakes[0].reply_for("llava:7b", "What colour is it?")


def test_servicestack_client_queues_and_polls_until_completed(server, key, fakes, png) -> None:
    client = servicestack_client(server, key)
    queued = client.post_file_with_request(
        QueueImageToText(ref_id="ss-queued-1", tag="clients"),
        UploadFile(field_name="image", file_name="a.png", content_type="image/png", stream=io.BytesIO(png)),
    )
    assert queued.job_id > 0 and queued.ref_id == "ss-queued-1"
    assert queued.status_url.startswith(server.url + "/api/GetTextGenerationStatus")

    status = client.get(GetTextGenerationStatus(job_id=queued.job_id))
    deadline = time.monotonic() + 30
    while status.job_state in (BackgroundJobState.QUEUED, BackgroundJobState.STARTED) and time.monotonic() < deadline:
        time.sleep(0.3)
        status = client.get(GetTextGenerationStatus(job_id=queued.job_id))

    assert status.job_state == BackgroundJobState.COMPLETED
    assert status.results[0].text == fakes[1].caption_for("more_detailed_caption")


def test_servicestack_client_sees_errors_as_web_service_exceptions(server, key, png) -> None:
    client = servicestack_client(server, key)

    with pytest.raises(WebServiceException) as raised:
        client.get(GetTextGenerationStatus(job_id=999999))

    assert raised.value.status_code == 404
    assert raised.value.response_status.message == "Job not found"


def test_ollama_client_generates_without_streaming(server, key, fakes, png) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    result = client.generate(model="llava:7b", prompt="Describe it", images=[png], stream=False)

    assert result.response == fakes[0].reply_for("llava:7b", "Describe it")
    assert result.done is True
    assert result.eval_count and result.eval_count > 0


def test_ollama_client_streams_text_before_the_end(server, key, fakes, png) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    parts = list(client.generate(model="gemma3:4b", prompt="Stream it", images=[png], stream=True))

    assert len(parts) > 2
    assert [p.done for p in parts[:-1]] == [False] * (len(parts) - 1) and parts[-1].done is True
    assert "".join(p.response for p in parts) == fakes[0].reply_for("gemma3:4b", "Stream it")


def test_ollama_client_gets_a_readable_error_for_an_unknown_model(server, key, png) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    with pytest.raises(ollama.ResponseError) as raised:
        client.generate(model="nope:1b", prompt="x", images=[png], stream=False)

    assert raised.value.status_code == 404
    assert "nope:1b" in raised.value.error


def test_a_burst_of_queued_jobs_never_exceeds_the_agents_concurrency(server, key, fakes, png) -> None:
    fake_ollama = fakes[0]
    fake_ollama.max_in_flight = 0
    headers = {"Authorization": f"Bearer {key}"}
    ids = []
    for n in range(6):
        response = httpx.post(
            server.url + "/api/QueueImageToText",
            headers=headers,
            data={"Model": "llava:7b", "Prompt": f"Burst {n}"},
            files={"image": ("a.png", png, "image/png")},
        )
        ids.append(response.json()["jobId"])

    states = wait_for_all(server, headers, ids)

    assert states == ["Completed"] * 6
    assert fake_ollama.max_in_flight == 1  # the agent registered from OLLAMA_URLS has concurrency 1


def wait_for_all(server: LiveServer, headers: dict[str, str], ids: list[int], seconds: float = 60) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        states = [
            httpx.get(f"{server.url}/api/GetTextGenerationStatus?JobId={job_id}", headers=headers).json()["jobState"]
            for job_id in ids
        ]
        if all(s not in ("Queued", "Started") for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.3)


def test_the_built_in_ocr_reads_a_screenshot_in_the_worker(server, key) -> None:
    from tests.drawing import SCREENSHOT_WORDS, encode, screenshot, word_recall

    client = servicestack_client(server, key)

    response = client.post_file_with_request(
        ImageToText(model="local/ocr"),
        UploadFile(
            field_name="image",
            file_name="screen.png",
            content_type="image/png",
            stream=io.BytesIO(encode(screenshot())),
        ),
    )

    assert word_recall(SCREENSHOT_WORDS, response.results[0].text) >= 0.9

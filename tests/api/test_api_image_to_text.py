"""POST /api/ImageToText: the synchronous call, against the fake backends."""

from __future__ import annotations

import base64
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from imagetotext.models import Job, State, StoredImage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


def upload(data: bytes, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def test_an_ollama_model_answers_with_its_text(api_client: Client, ollama_agent, fake_ollama, png_bytes) -> None:
    response = api_client.post(
        "/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "Prompt": "What is this?"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["results"] == [{"text": fake_ollama.reply_for("llava:7b", "What is this?")}]
    assert re.fullmatch(r"PT[\d.]+S", body["duration"])
    assert "responseStatus" not in body


def test_the_image_reaches_ollama_as_raw_base64_once(api_client: Client, ollama_agent, fake_ollama, png_bytes) -> None:
    api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "Prompt": "Hi"})

    [sent] = [r for r in fake_ollama.requests if r.path == "/api/generate"]
    assert sent.json["model"] == "llava:7b" and sent.json["prompt"] == "Hi"
    assert not sent.json["images"][0].startswith("data:")
    assert base64.b64decode(sent.json["images"][0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_fields_are_read_from_the_query_string_in_any_case(
    api_client: Client, ollama_agent, fake_ollama, png_bytes
) -> None:
    response = api_client.post(
        "/api/ImageToText?model=gemma3:4b&prompt=Caption%20it&refId=abc", {"image": upload(png_bytes)}
    )

    assert response.status_code == 200
    job = Job.objects.get()
    assert (job.model, job.prompt, job.ref_id) == ("gemma3:4b", "Caption it", "abc")


def test_a_missing_prompt_gets_a_sensible_default(api_client: Client, ollama_agent, png_bytes) -> None:
    api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert Job.objects.get().prompt == "Describe this image."


def test_no_model_means_florence_on_comfyui(api_client: Client, comfy_agent, fake_comfyui, png_bytes) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes)})

    assert response.status_code == 200
    job = Job.objects.get()
    assert job.model == "microsoft/Florence-2-base"
    assert response.json()["results"] == [{"text": fake_comfyui.caption_for(job.florence_task)}]


def test_a_florence_task_can_be_chosen(api_client: Client, comfy_agent, fake_comfyui, png_bytes) -> None:
    response = api_client.post(
        "/api/ImageToText", {"image": upload(png_bytes), "Model": "Florence-2-base", "Task": "ocr"}
    )

    assert response.json()["results"] == [{"text": fake_comfyui.caption_for("ocr")}]


def test_the_same_image_is_stored_once(api_client: Client, ollama_agent, png_bytes) -> None:
    for _ in range(2):
        api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert Job.objects.count() == 2
    assert StoredImage.objects.count() == 1


def test_an_unknown_model_is_a_404_and_nothing_is_stored(api_client: Client, ollama_agent, png_bytes) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "nope:1b"})

    assert response.status_code == 404
    assert response.json()["responseStatus"]["message"] == "Model nope:1b not found"
    assert Job.objects.count() == 0 and StoredImage.objects.count() == 0


def test_a_text_only_model_is_refused_before_anything_runs(
    api_client: Client, ollama_agent, fake_ollama, png_bytes
) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llama3.2:3b"})

    assert response.status_code == 400
    assert "cannot read images" in response.json()["responseStatus"]["message"]
    assert not [r for r in fake_ollama.requests if r.path == "/api/generate"]


def test_a_model_whose_agents_are_all_offline_is_refused_at_once(api_client: Client, ollama_agent, png_bytes) -> None:
    ollama_agent.mark_offline("Cannot connect: connection refused")

    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert response.status_code == 405
    assert response.json()["responseStatus"]["errorCode"] == "NotSupportedException"
    assert Job.objects.count() == 0


def test_no_image_is_a_400_naming_the_field(api_client: Client, ollama_agent) -> None:
    response = api_client.post("/api/ImageToText", {"Model": "llava:7b"})

    assert response.status_code == 400
    status = response.json()["responseStatus"]
    assert status["errors"][0]["fieldName"] == "Image"


def test_a_file_that_is_not_an_image_is_a_400(api_client: Client, ollama_agent) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(b"hello, world"), "Model": "llava:7b"})

    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_a_broken_photo_that_would_be_sent_as_it_is_is_a_400_and_reaches_no_backend(
    api_client: Client, ollama_agent, fake_ollama
) -> None:
    # Its segments add up and it fits the backend, so only decoding it (beside the job's
    # transaction) finds the damage: the transaction must roll back, the backend never see it.
    buffer = io.BytesIO()
    Image.effect_noise((800, 600), 64).convert("RGB").save(buffer, "JPEG", quality=90)
    whole = buffer.getvalue()
    scan = whole.index(b"\xff\xda")
    broken = whole[: scan + 6] + b"\x33" + whole[scan + 7 :]  # the scan names Huffman tables never defined

    response = api_client.post("/api/ImageToText", {"image": upload(broken, "photo.jpg"), "Model": "llava:7b"})

    assert response.status_code == 400
    assert "truncated or corrupt" in response.json()["responseStatus"]["message"]
    assert Job.objects.count() == 0 and StoredImage.objects.count() == 0
    assert not [r for r in fake_ollama.requests if r.path == "/api/generate"]


def test_an_oversized_image_is_a_413(api_client: Client, ollama_agent, png_bytes, monkeypatch) -> None:
    from imagetotext.conf import Conf

    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", 100)

    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert response.status_code == 413
    assert response.json()["responseStatus"]["errorCode"] == "ImageTooLarge"


def test_a_backend_failure_is_a_500_with_the_reason(api_client: Client, ollama_agent, fake_ollama, png_bytes) -> None:
    fake_ollama.mode = "no_vision"

    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert response.status_code == 500
    assert "cannot read images" in response.json()["responseStatus"]["message"]
    assert Job.objects.get().state == State.FAILED


def test_get_is_a_405_with_response_status(api_client: Client) -> None:
    response = api_client.get("/api/ImageToText")

    assert response.status_code == 405
    assert response.json()["responseStatus"]["errorCode"] == "NotSupportedException"


def test_without_a_key_it_is_a_401(client: Client, png_bytes) -> None:
    response = client.post("/api/ImageToText", {"image": upload(png_bytes)})

    assert response.status_code == 401
    assert "responseStatus" in response.json()

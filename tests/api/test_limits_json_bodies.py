"""JSON routes take a base64 image as large as IMAGE_MAX_BYTES promises, and refuse larger in their own shape."""

from __future__ import annotations

import base64
import json
import random
from io import BytesIO

import pytest
from django.conf import settings
from django.test import Client
from PIL import Image

from imagetotext.conf import Conf
from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def noisy_png(width: int, height: int) -> bytes:
    """A PNG of random pixels: it does not compress, so it is about 3 bytes a pixel."""
    noise = random.Random(7).randbytes(width * height * 3)
    buffer = BytesIO()
    Image.frombytes("RGB", (width, height), noise).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    data = noisy_png(820, 820)
    assert 2_000_000 < len(data) < 2_200_000
    return data


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_two_megabyte_photo_in_base64_goes_through_generate(
    api_client: Client, ollama_agent, fake_ollama, photo
) -> None:
    image = base64.b64encode(photo).decode()
    body = json.dumps({"model": "llava:7b", "prompt": "Describe", "images": [image], "stream": False})
    assert len(body) > 2.5 * 2**20  # more than Django's default DATA_UPLOAD_MAX_MEMORY_SIZE

    response = api_client.post("/api/generate", body, content_type="application/json")

    assert response.status_code == 200
    assert response.json()["done"] is True
    assert response.json()["response"] == fake_ollama.reply_for("llava:7b", "Describe")
    assert Job.objects.get().state == State.COMPLETED
    [sent] = [r for r in fake_ollama.requests if r.path == "/api/generate"]
    assert Image.open(BytesIO(sent.images[0])).size == (820, 820)


@pytest.mark.usefixtures("jobs_run_inline")
def test_a_two_megabyte_photo_goes_through_the_queued_ollama_route(api_client: Client, ollama_agent, photo) -> None:
    inner = {"model": "llava:7b", "prompt": "Describe", "images": [base64.b64encode(photo).decode()]}

    response = api_client.post("/api/QueueOllamaGeneration", {"request": inner}, content_type="application/json")

    assert response.status_code == 200
    assert Job.objects.get().state == State.COMPLETED


def test_a_body_holding_an_image_of_the_full_size_allowed_is_read(api_client: Client, ollama_agent) -> None:
    # Not an image, but exactly IMAGE_MAX_BYTES of it: refused for what it holds, not for its size.
    image = base64.b64encode(bytes(Conf.MAX_UPLOAD_BYTES)).decode()
    body = json.dumps({"model": "llava:7b", "prompt": "p" * 10_000, "images": [image], "tag": "t" * 100})

    response = api_client.post("/api/OllamaGeneration", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["responseStatus"]["errorCode"] == "UnsupportedImageFormat"


def test_a_json_body_over_the_limit_gets_an_ollama_413(api_client: Client) -> None:
    body = b'{"model": "llava:7b", "images": ["' + b"A" * settings.JSON_BODY_MAX_BYTES + b'"]}'

    response = api_client.post("/api/generate", body, content_type="application/json")

    assert response.status_code == 413
    assert "larger than" in response.json()["error"]
    assert response.json()["responseStatus"]["errorCode"] == "RequestTooLarge"
    assert Job.objects.count() == 0


def test_an_image_over_the_limit_in_base64_is_a_413_naming_the_image(api_client: Client, ollama_agent) -> None:
    image = base64.b64encode(bytes(Conf.MAX_UPLOAD_BYTES + 1)).decode()

    response = api_client.post(
        "/api/generate", {"model": "llava:7b", "images": [image], "stream": False}, content_type="application/json"
    )

    assert response.status_code == 413
    assert response.json()["error"]
    assert response.json()["responseStatus"]["errorCode"] == "ImageTooLarge"

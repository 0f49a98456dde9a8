"""Presets are data: whatever an admin sets on one (prompt, Florence task, longest side) is what
the backend gets, through the API, a batch and the page alike."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from imagetotext.models import Job, Preset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


def photo(size: tuple[int, int] = (1600, 1200), name: str = "photo.png") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, "PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


def sizes_sent(fake_ollama) -> list[tuple[int, int]]:
    sent = [r.json["images"][0] for r in fake_ollama.requests if r.path == "/api/generate"]
    return [Image.open(io.BytesIO(base64.b64decode(data))).size for data in sent]


@pytest.fixture
def small_preset(presets) -> Preset:
    preset = Preset.objects.get(key="caption")
    preset.longest_side = 400
    preset.save()
    return preset


@pytest.mark.parametrize("route", ["/api/ImageToText", "/api/QueueImageToText"])
def test_a_presets_longest_side_is_the_size_the_backend_gets(
    route, api_client: Client, ollama_agent, fake_ollama, small_preset
) -> None:
    response = api_client.post(route, {"image": photo(), "Model": "llava:7b", "Preset": "caption"})

    assert response.status_code == 200, response.content
    assert sizes_sent(fake_ollama) == [(400, 300)]
    job = Job.objects.get()
    assert (job.longest_side, job.prompt) == (400, small_preset.prompt)


def test_without_a_longest_side_the_default_applies(api_client: Client, ollama_agent, fake_ollama, presets) -> None:
    api_client.post("/api/ImageToText", {"image": photo(), "Model": "llava:7b", "Preset": "caption"})

    assert sizes_sent(fake_ollama) == [(1024, 768)]
    assert Job.objects.get().longest_side is None


def test_a_prompt_of_the_request_wins_over_the_presets(api_client: Client, ollama_agent, presets) -> None:
    api_client.post("/api/ImageToText", {"image": photo(), "Model": "llava:7b", "Preset": "tags", "Prompt": "Mine."})

    assert Job.objects.get().prompt == "Mine."


def test_the_tags_preset_on_florence_runs_its_tagging_task(api_client: Client, comfy_agent, presets) -> None:
    response = api_client.post(
        "/api/QueueImageToText", {"image": photo(), "Model": "microsoft/Florence-2-base", "Preset": "tags"}
    )

    assert response.status_code == 200, response.content
    assert (Job.objects.get().florence_task, Job.objects.get().prompt) == ("prompt_gen_tags", "")


def test_a_batch_takes_the_presets_task_and_longest_side(
    api_client: Client, ollama_agent, comfy_agent, fake_ollama, small_preset
) -> None:
    response = api_client.post(
        "/api/QueueImageToTextBatch",
        {"image": [photo(name="a.png"), photo(name="b.png")], "Model": "llava:7b", "Preset": "caption"},
    )
    assert response.status_code == 200, response.content
    assert sizes_sent(fake_ollama) == [(400, 300), (400, 300)]

    response = api_client.post(
        "/api/QueueImageToTextBatch",
        {"image": [photo(name="c.png")], "Model": "microsoft/Florence-2-base", "Preset": "tags"},
    )
    assert response.status_code == 200, response.content
    assert Job.objects.get(path="c.png").florence_task == "prompt_gen_tags"


def test_the_page_sends_the_presets_longest_side(user_client, ollama_agent, fake_ollama, small_preset) -> None:
    response = user_client.post(
        "/ImageToText/jobs", {"images": [photo()], "model": "llava:7b", "preset": "caption"}, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    assert sizes_sent(fake_ollama) == [(400, 300)]

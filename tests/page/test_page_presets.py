"""The page's presets are Preset rows: their order, labels and prompts, and a plain request when there are none."""

from __future__ import annotations

from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from imagetotext.models import Job, Preset

pytestmark = pytest.mark.django_db(transaction=True)


def png() -> SimpleUploadedFile:
    buffer = BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, "PNG")
    return SimpleUploadedFile("red.png", buffer.getvalue(), content_type="image/png")


def test_the_page_lists_the_preset_rows_in_their_order_with_an_added_one(user_client, ollama_agent):
    Preset.objects.create(
        key="product", label="Product photo", prompt="Describe the product.", florence_task="caption", position=0
    )
    Preset.objects.filter(key="caption").update(label="One line", position=9)
    html = user_client.get("/ImageToText").content.decode()
    assert html.index("Product photo") < html.index("Detailed description") < html.index("One line")
    assert 'data-prompt="Describe the product."' in html


def test_a_preset_added_in_the_admin_can_be_sent_and_gives_its_prompt(user_client, ollama_agent):
    Preset.objects.create(key="product", label="Product photo", prompt="Describe the product.", florence_task="caption")
    response = user_client.post(
        "/ImageToText/jobs", {"images": [png()], "model": "llava:7b", "preset": "product"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert Job.objects.get().prompt == "Describe the product."


def test_a_preset_deleted_meanwhile_is_refused(user_client, ollama_agent):
    Preset.objects.filter(key="alt").delete()
    response = user_client.post(
        "/ImageToText/jobs", {"images": [png()], "model": "llava:7b", "preset": "alt"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert Job.objects.count() == 0


def test_with_no_presets_the_page_says_so_and_sends_a_plain_request(user_client, ollama_agent):
    Preset.objects.all().delete()
    html = user_client.get("/ImageToText").content.decode()
    assert "No presets are set up" in html and "Describe this image." in html
    response = user_client.post("/ImageToText/jobs", {"images": [png()], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Job.objects.get().prompt == "Describe this image."


def test_with_no_presets_florence_runs_its_detailed_caption(user_client, comfy_agent):
    Preset.objects.all().delete()
    user_client.post(
        "/ImageToText/jobs", {"images": [png()], "model": "microsoft/Florence-2-base"}, HTTP_HX_REQUEST="true"
    )
    assert Job.objects.get().florence_task == "more_detailed_caption"


def test_a_presets_florence_task_comes_from_its_row(user_client, comfy_agent):
    Preset.objects.filter(key="alt").update(florence_task="caption")
    user_client.post(
        "/ImageToText/jobs",
        {"images": [png()], "model": "microsoft/Florence-2-base", "preset": "alt"},
        HTTP_HX_REQUEST="true",
    )
    assert Job.objects.get().florence_task == "caption"

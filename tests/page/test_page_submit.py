"""Sending images from the page: one job per image, cards back, readable refusals."""

from __future__ import annotations

from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from imagetotext.models import Job, State, StoredImage

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ImageToText/jobs"


def png(colour: str) -> SimpleUploadedFile:
    buffer = BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return SimpleUploadedFile(f"{colour}.png", buffer.getvalue(), content_type="image/png")


def test_it_creates_one_job_per_image_and_the_page_lists_their_cards_newest_first(user_client, ollama_agent, api_user):
    for colour in ("red", "blue"):
        response = user_client.post(
            URL,
            {"images": [png(colour)], "model": "llava:7b", "preset": "caption", "prompt": "What is it?"},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 200
    first, second = Job.objects.order_by("pk")
    assert [first.owner, second.owner] == [api_user, api_user]
    assert first.prompt == second.prompt == "What is it?"
    # The answer carries no card: cards reach an open page over its WebSocket only.
    assert "job-card" not in response.content.decode()
    html = user_client.get("/ImageToText").content.decode()
    assert html.index(f'id="job-{second.pk}"') < html.index(f'id="job-{first.pk}"')
    assert StoredImage.objects.count() == 2


def test_an_empty_prompt_takes_the_presets_prompt(user_client, ollama_agent):
    user_client.post(
        URL, {"images": [png("red")], "model": "llava:7b", "preset": "tags", "prompt": " "}, HTTP_HX_REQUEST="true"
    )
    assert Job.objects.get().prompt.startswith("List 10 to 15 comma-separated keywords")


def test_one_file_that_is_not_an_image_is_named_in_the_error_and_nothing_is_created(user_client, ollama_agent):
    bad = SimpleUploadedFile("notes.txt", b"just some words", content_type="text/plain")
    response = user_client.post(URL, {"images": [bad], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="upload-errors"' in html and 'hx-swap-oob="true"' in html
    assert "notes.txt: The file is not an image in an accepted format" in html
    assert Job.objects.count() == 0
    assert StoredImage.objects.count() == 0


def test_without_htmx_a_refusal_shows_the_whole_page_with_the_error(user_client, ollama_agent):
    response = user_client.post(URL, {"model": "llava:7b"})
    assert response.status_code == 400
    assert "Add at least one image" in response.content.decode()
    assert '<form id="compose"' in response.content.decode()


def test_without_htmx_a_success_redirects_to_the_page(user_client, ollama_agent):
    response = user_client.post(URL, {"images": [png("red")], "model": "llava:7b"})
    assert response.status_code == 302
    assert response["Location"] == "/ImageToText"
    assert Job.objects.count() == 1


def test_a_model_that_is_not_usable_is_refused_readably(user_client, ollama_agent):
    ollama_agent.mark_offline("down")
    response = user_client.post(URL, {"images": [png("red")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "The model llava:7b cannot take images right now" in response.content.decode()
    assert Job.objects.count() == 0


def test_a_florence_model_gets_the_presets_task_and_no_prompt(user_client, comfy_agent):
    response = user_client.post(
        URL,
        {"images": [png("red")], "model": "microsoft/Florence-2-base", "preset": "alt", "prompt": "ignored"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    job = Job.objects.get()
    assert (job.florence_task, job.prompt) == ("detailed_caption", "")
    assert "Florence-2 task: Detailed caption" in user_client.get("/ImageToText").content.decode()


def test_tags_on_florence_use_a_tagging_task_only_when_the_model_has_one(user_client, comfy_agent):
    model = comfy_agent.models.get(name="microsoft/Florence-2-base")
    assert "prompt_gen_tags" in model.details["tasks"]
    user_client.post(URL, {"images": [png("red")], "model": model.name, "preset": "tags"}, HTTP_HX_REQUEST="true")
    assert Job.objects.get().florence_task == "prompt_gen_tags"
    model.details["tasks"].remove("prompt_gen_tags")
    model.save()
    user_client.post(URL, {"images": [png("blue")], "model": model.name, "preset": "tags"}, HTTP_HX_REQUEST="true")
    assert Job.objects.order_by("-pk").first().florence_task == "caption"


def test_the_tag_is_stored_with_each_job(user_client, ollama_agent):
    user_client.post(URL, {"images": [png("red")], "model": "llava:7b", "tag": "holiday"}, HTTP_HX_REQUEST="true")
    assert Job.objects.get().tag == "holiday"


def test_run_again_reuses_the_stored_image_in_a_new_job(user_client, ollama_agent):
    user_client.post(URL, {"images": [png("red")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    first = Job.objects.get()
    response = user_client.post(
        URL, {"again": [str(first.pk)], "model": "gemma3:4b", "prompt": "Count the squares."}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    again = Job.objects.exclude(pk=first.pk).get()
    assert (again.image_id, again.model, again.prompt) == (first.image_id, "gemma3:4b", "Count the squares.")
    assert f'id="job-{again.pk}"' in user_client.get("/ImageToText").content.decode()
    assert StoredImage.objects.count() == 1


def test_run_again_of_another_users_job_sends_nothing(user_client, ollama_agent, admin_user, png_bytes):
    from imagetotext.models import store_image

    image, _ = store_image(png_bytes, "image/png", 64, 48)
    theirs = Job.objects.create(owner=admin_user, image=image, model="llava:7b", state=State.COMPLETED)
    response = user_client.post(URL, {"again": [str(theirs.pk)], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert Job.objects.count() == 1


def test_jobs_run_and_the_card_shows_the_rendered_text(user_client, ollama_agent, fake_ollama, jobs_run_inline):
    fake_ollama.replies["llava:7b"] = "A **red** square."
    user_client.post(URL, {"images": [png("red")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    job = Job.objects.get()
    assert job.state == State.COMPLETED
    page = user_client.get("/ImageToText").content.decode()
    assert "A <strong>red</strong> square." in page
    assert "Copy text" in page


def test_an_image_over_the_size_limit_is_refused_by_name(user_client, ollama_agent, monkeypatch):
    from imagetotext.conf import Conf

    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", 50)
    response = user_client.post(URL, {"images": [png("red")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "red.png: The image is larger than" in response.content.decode()
    assert Job.objects.count() == 0

"""A job may carry several images (a vision model that reads more than one) and a chat's messages:
they are stored with the job, in order, and reach Ollama as they were sent."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from imagetotext import jobs
from imagetotext.errors import Refusal
from imagetotext.images import read_upload
from imagetotext.models import Job, JobImage, State, StoredImage

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


def png(colour: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def sent_colours(images: list[str]) -> list[tuple[int, ...]]:
    decoded = [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in images]
    return [im.getpixel((0, 0)) for im in decoded]  # type: ignore[misc]


def create(api_user, model: str, colours: list[str], messages: list | None = None) -> Job:
    uploads = [read_upload(png(colour)) for colour in colours]
    request = jobs.JobRequest(
        owner=api_user, model=model, prompt="Compare them.", image_count=len(uploads), messages=messages or []
    )
    return jobs.create_with_upload(jobs.validate(request), uploads[0], more=uploads[1:])


def test_every_image_reaches_generate_in_the_order_sent(api_user, ollama_agent, fake_ollama) -> None:
    job = create(api_user, "llava:7b", ["red", "blue", "lime"])

    job.refresh_from_db()
    assert job.state == State.COMPLETED, job.error
    [sent] = [r.json for r in fake_ollama.requests if r.path == "/api/generate"]
    assert sent_colours(sent["images"]) == [(255, 0, 0), (0, 0, 255), (0, 255, 0)]
    assert [image.sha256 for image in job.stored_images()] == [
        StoredImage.objects.get(pk=job.image_id).sha256,
        *JobImage.objects.filter(job=job).values_list("image__sha256", flat=True),
    ]
    assert job.image_count == 3


def test_a_chat_sends_each_messages_own_images(api_user, ollama_agent, fake_ollama) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "This one?", "images": [0]},
        {"role": "assistant", "content": "A red square."},
        {"role": "user", "content": "And these?", "images": [1, 2]},
    ]
    create(api_user, "llava:7b", ["red", "blue", "lime"], messages)

    [sent] = [r.json for r in fake_ollama.requests if r.path == "/api/chat"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert "images" not in sent["messages"][0] and "images" not in sent["messages"][2]
    assert sent_colours(sent["messages"][1]["images"]) == [(255, 0, 0)]
    assert sent_colours(sent["messages"][3]["images"]) == [(0, 0, 255), (0, 255, 0)]


def test_a_model_that_reads_one_image_refuses_several_and_stores_nothing(api_user, comfy_agent) -> None:
    with pytest.raises(Refusal, match="reads one image per request"):
        create(api_user, "microsoft/Florence-2-base", ["red", "blue"])

    assert not Job.objects.exists() and not StoredImage.objects.exists()


def test_deleting_the_job_on_the_page_removes_its_images_no_other_job_uses(api_user, user_client, ollama_agent) -> None:
    kept = create(api_user, "llava:7b", ["red"])
    job = create(api_user, "llava:7b", ["red", "blue"])
    blue = job.stored_images()[1]

    assert user_client.post(f"/ImageToText/jobs/{job.pk}/delete").status_code == 302

    assert list(StoredImage.objects.values_list("pk", flat=True)) == [kept.image_id]
    assert not blue.file.storage.exists(blue.file.name)

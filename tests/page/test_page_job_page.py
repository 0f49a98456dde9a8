"""A job's own page: the original image at full size through a checked view, and what the job took."""

from __future__ import annotations

from datetime import timedelta
from io import BytesIO

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from imagetotext.models import Job, State, store_image

pytestmark = pytest.mark.django_db(transaction=True)


def image_bytes(image_format: str, size: tuple[int, int] = (300, 200)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, "navy").save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture
def done_job(api_user, png_bytes) -> Job:
    stored = store_image(png_bytes, "image/png", 64, 48)[0]
    queued = timezone.now() - timedelta(seconds=10)
    return Job.objects.create(
        owner=api_user,
        image=stored,
        path="shop/sign.png",
        model="llava:7b",
        prompt="Read the sign.",
        tag="signs",
        state=State.COMPLETED,
        output="OPEN",
        created_at=queued,
        queued_at=queued,
        started_at=queued + timedelta(seconds=3),
        finished_at=queued + timedelta(seconds=7),
        prompt_tokens=600,
        completion_tokens=40,
    )


def test_the_owner_gets_the_original_bytes_as_sent(user_client, done_job, png_bytes):
    response = user_client.get(f"/ImageToText/jobs/{done_job.pk}/images/1")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cache-Control"].startswith("private")
    assert b"".join(response.streaming_content) == png_bytes


def test_download_saves_it_under_the_uploads_file_name(user_client, done_job):
    response = user_client.get(f"/ImageToText/jobs/{done_job.pk}/images/1?download=1")
    assert response["Content-Disposition"] == 'attachment; filename="sign.png"'


@pytest.mark.parametrize("who", ["another user", "nobody signed in"])
def test_nobody_else_gets_the_image(done_job, django_user_model, who):
    client = Client()
    if who == "another user":
        client.force_login(django_user_model.objects.create_user("bob", password="pw-for-tests-only"))
    response = client.get(f"/ImageToText/jobs/{done_job.pk}/images/1")
    assert response.status_code == (404 if who == "another user" else 302)
    if who == "nobody signed in":
        assert response["Location"].startswith("/accounts/login/")


def test_an_image_number_the_job_does_not_have_is_not_found(user_client, done_job):
    assert user_client.get(f"/ImageToText/jobs/{done_job.pk}/images/2").status_code == 404
    assert user_client.get(f"/ImageToText/jobs/{done_job.pk}/images/0").status_code == 404


def test_a_tiff_is_shown_as_a_full_size_webp_and_downloaded_as_sent(user_client, api_user):
    tiff = image_bytes("TIFF")
    stored = store_image(tiff, "image/tiff", 300, 200)[0]
    job = Job.objects.create(owner=api_user, image=stored, model="llava:7b", path="scan.tif")
    shown = user_client.get(f"/ImageToText/jobs/{job.pk}/images/1")
    assert shown["Content-Type"] == "image/webp"
    assert Image.open(BytesIO(shown.content)).size == (300, 200)
    saved = user_client.get(f"/ImageToText/jobs/{job.pk}/images/1?download=1")
    assert b"".join(saved.streaming_content) == tiff


def test_the_job_page_shows_the_image_its_facts_and_its_actions(user_client, done_job):
    html = user_client.get(f"/ImageToText/jobs/{done_job.pk}").content.decode()
    url = f"/ImageToText/jobs/{done_job.pk}/images/1"
    assert f'<img src="{url}" alt="The image sent with request {done_job.pk}" width="64" height="48">' in html
    assert "/media/" not in html
    assert "64×48 · image/png" in html
    assert "<dt>File</dt><dd>shop/sign.png</dd>" in html
    assert '<dt>Prompt</dt><dd class="prewrap">Read the sign.</dd>' in html
    assert "<dt>Waited</dt><dd>3.0 s in the queue</dd>" in html
    assert "<dt>Ran</dt><dd>4.0 s</dd>" in html
    assert "<dt>Tokens</dt><dd>600 in, 40 out · 10.0 tokens/s</dd>" in html
    assert "Copy text" in html and f'data-again="{done_job.pk}"' in html

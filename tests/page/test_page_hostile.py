"""Hostile or broken input to the page: readable refusals, nothing written, no redirect off the site."""

from __future__ import annotations

from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from imagetotext.models import Job, State, StoredImage

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ImageToText/jobs"
NOTHING_SENT = "Nothing was sent:"


def png(name: str = "red.png") -> SimpleUploadedFile:
    buffer = BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, "PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


def done(owner, image) -> Job:
    return Job.objects.create(
        owner=owner, image=image, model="llava:7b", state=State.COMPLETED, finished_at=timezone.now()
    )


def assert_refused_readably(response, status: int, message: str) -> None:
    assert response.status_code == status
    html = response.content.decode()
    assert NOTHING_SENT in html and message in html
    assert not Job.objects.exists()
    assert not StoredImage.objects.exists()


# Where delete sends the browser next


@pytest.mark.parametrize(
    "next_url",
    ["https://evil.invalid/", "//evil.invalid", "\\\\evil.invalid", "/\\evil.invalid", "javascript:alert(1)"],
)
def test_delete_never_redirects_off_the_site(user_client, api_user, image, next_url):
    job = done(api_user, image)
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/delete", {"next": next_url})
    assert response.status_code == 302
    assert response["Location"] == "/ImageToText/history"
    assert not Job.objects.filter(pk=job.pk).exists()


def test_delete_keeps_a_next_path_on_this_site(user_client, api_user, image):
    job = done(api_user, image)
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/delete", {"next": "/ImageToText/history?page=2"})
    assert response["Location"] == "/ImageToText/history?page=2"


# Run again with ids that are not ids


@pytest.mark.parametrize("value", ["²", "١٢", "𝟙", "9" * 30, "-1", "1.0", " 1"])
def test_run_again_with_a_value_that_is_not_a_job_id_is_ignored(user_client, ollama_agent, value):
    response = user_client.post(URL, {"again": [value], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert_refused_readably(response, 400, "Add at least one image")


def test_run_again_with_a_unicode_digit_beside_an_upload_sends_only_the_upload(user_client, ollama_agent):
    response = user_client.post(URL, {"images": [png()], "again": ["²"], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Job.objects.count() == 1


# Bodies the form parser refuses


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", f"multipart/form-data; boundary={'b' * 250}"],
    ids=["none", "empty", "too-long"],
)
def test_multipart_without_a_usable_boundary_gets_the_pages_refusal(user_client, ollama_agent, content_type):
    response = user_client.generic("POST", URL, b"images=1", content_type=content_type, HTTP_HX_REQUEST="true")
    assert_refused_readably(response, 400, "The request could not be read as a form of images.")


def test_a_file_part_of_broken_base64_gets_the_pages_refusal(user_client, ollama_agent):
    body = (
        b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n--b--\r\n"
    )
    response = user_client.generic("POST", URL, body, content_type="multipart/form-data; boundary=b")
    assert_refused_readably(response, 400, "The request could not be read as a form of images.")


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\xff garbage \r\n\r\n",
        b"--b\r\n\r\n\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\nnot an image',
    ],
    ids=["no-parts", "part-without-headers", "unterminated"],
)
def test_garbage_multipart_gets_the_pages_refusal_without_htmx(user_client, ollama_agent, body):
    response = user_client.generic("POST", URL, body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400
    html = response.content.decode()
    assert NOTHING_SENT in html and '<form id="compose"' in html
    assert not Job.objects.exists()


def test_fields_over_the_size_limit_get_a_readable_413(user_client, ollama_agent, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = user_client.post(
        URL, {"images": [png()], "model": "llava:7b", "prompt": "x" * 5000}, HTTP_HX_REQUEST="true"
    )
    assert_refused_readably(response, 413, "The request is too large for the server to read")


def test_too_many_files_are_refused_readably(user_client, ollama_agent, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [png(f"{n}.png") for n in range(3)]
    response = user_client.post(URL, {"images": files, "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert_refused_readably(response, 400, "too many fields or files")


def test_too_many_fields_are_refused_readably(user_client, ollama_agent, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = user_client.post(URL, {"again": ["1"] * 10, "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert_refused_readably(response, 400, "too many fields or files")


# The CSRF check still holds once the body is read first


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_a_submit_without_the_csrf_token_is_still_forbidden(api_user, ollama_agent):
    response = csrf_client(api_user).post(URL, {"images": [png()], "model": "llava:7b"})
    assert response.status_code == 403
    assert not Job.objects.exists()


def test_a_submit_with_the_csrf_token_is_sent(api_user, ollama_agent):
    client = csrf_client(api_user)
    client.get("/ImageToText")
    token = client.cookies["csrftoken"].value
    response = client.post(URL, {"images": [png()], "model": "llava:7b"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    assert Job.objects.count() == 1


def test_a_broken_body_from_another_site_is_refused_and_writes_nothing(api_user, ollama_agent):
    response = csrf_client(api_user).generic("POST", URL, b"x", content_type="multipart/form-data")
    assert response.status_code == 400
    assert not Job.objects.exists()


def test_signed_out_a_broken_body_goes_to_sign_in(ollama_agent):
    response = Client().generic("POST", URL, b"x", content_type="multipart/form-data")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

"""Inputs that used to crash the API (500) or be refused outside its error shape, and statusUrl encoding."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from imagetotext.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

DEEP_JSON = "[" * 100_000


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", data, content_type="image/png")


@pytest.fixture
def not_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Keep queued jobs queued: record what would go to the workers."""
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


def assert_refused(response, status: int, field: str = "") -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()["responseStatus"]
    assert body["message"]
    if field:
        assert body["errors"][0]["fieldName"] == field
    return body


@pytest.mark.parametrize("reply_to", ["http://[::1/cb", "http://[zz::1]/", "https://[::1]:99999/hook"])
def test_a_malformed_reply_to_url_is_a_400_naming_reply_to(
    api_client: Client, ollama_agent, png_bytes, reply_to
) -> None:
    response = api_client.post(
        "/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "ReplyTo": reply_to}
    )

    assert "cannot be read" in assert_refused(response, 400, "ReplyTo")["message"]
    assert Job.objects.count() == 0


def test_a_malformed_reply_to_of_a_queued_ollama_generation_is_a_400(
    api_client: Client, ollama_agent, png_bytes
) -> None:
    import base64

    body = {
        "request": {"model": "llava:7b", "images": [base64.b64encode(png_bytes).decode()]},
        "replyTo": "http://[::1/",
    }
    response = api_client.post("/api/QueueOllamaGeneration", body, content_type="application/json")

    assert response.json()["error"]
    assert_refused(response, 400, "ReplyTo")


@pytest.mark.parametrize("job_id", ["²", "٣", "１２"], ids=["superscript-two", "arabic-indic-three", "fullwidth-12"])
@pytest.mark.parametrize("route", ["GetTextGenerationStatus", "GetOllamaGenerationStatus"])
def test_a_job_id_of_unicode_digits_is_a_400(api_client: Client, route: str, job_id: str) -> None:
    response = api_client.get(f"/api/{route}", {"JobId": job_id})

    assert assert_refused(response, 400, "JobId")["message"] == "JobId must be a number"


def test_a_job_id_in_ascii_digits_still_finds_the_job(api_client: Client, ollama_agent, png_bytes, not_run) -> None:
    job_id = api_client.post("/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b"}).json()["jobId"]

    assert api_client.get("/api/GetTextGenerationStatus", {"JobId": str(job_id)}).json()["jobId"] == job_id


@pytest.mark.parametrize(
    "route",
    ["ImageToText", "QueueImageToText", "OllamaGeneration", "generate", "QueueOllamaGeneration"],
)
def test_deeply_nested_json_is_a_400_on_every_json_route(api_client: Client, route: str) -> None:
    response = api_client.post(f"/api/{route}", DEEP_JSON, content_type="application/json")

    assert "nested" in assert_refused(response, 400)["message"]


def test_deeply_nested_json_on_a_status_route_is_a_400(api_client: Client) -> None:
    response = api_client.generic("GET", "/api/GetTextGenerationStatus", DEEP_JSON, content_type="application/json")

    assert "nested" in assert_refused(response, 400)["message"]


def test_deeply_nested_json_on_generate_is_an_ollama_error(api_client: Client) -> None:
    response = api_client.post("/api/generate", DEEP_JSON, content_type="application/json")

    assert "nested" in response.json()["error"]


def test_json_nested_just_too_deep_to_store_is_refused(api_client: Client, ollama_agent) -> None:
    options = "[" * 40 + "]" * 40
    body = f'{{"model": "llava:7b", "images": ["AAAA"], "options": {options}}}'
    response = api_client.post("/api/OllamaGeneration", body, content_type="application/json")

    assert "nested more than 32" in assert_refused(response, 400)["message"]
    assert Job.objects.count() == 0


def test_a_three_megabyte_prompt_is_refused_in_the_api_shape(api_client: Client, ollama_agent, png_bytes) -> None:
    response = api_client.post(
        "/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "Prompt": "x" * 3_000_000}
    )

    assert_refused(response, 400, "Prompt")
    assert Job.objects.count() == 0


def test_form_fields_over_djangos_memory_limit_are_a_413_in_the_api_shape(
    api_client: Client, ollama_agent, png_bytes, settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    response = api_client.post(
        "/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "Prompt": "x" * 200_000}
    )

    assert assert_refused(response, 413)["errorCode"] == "RequestTooLarge"


def test_multipart_without_a_boundary_is_a_400_in_the_api_shape(api_client: Client) -> None:
    response = api_client.generic("POST", "/api/ImageToText", b"--x\r\n\r\n", content_type="multipart/form-data")

    assert "multipart" in assert_refused(response, 400)["message"]


def test_garbage_multipart_is_a_400_in_the_api_shape(api_client: Client) -> None:
    garbage = b'--b\r\nContent-Disposition: form-data; name="image"' + b"\xfe" * 2000  # a part head that never ends
    response = api_client.generic(
        "POST", "/api/QueueImageToText", garbage, content_type="multipart/form-data; boundary=b"
    )

    assert "header size" in assert_refused(response, 400)["message"]


def test_multipart_without_a_boundary_from_a_signed_in_user_is_a_400_too(user_client: Client) -> None:
    # The session's CSRF check reads the form before the view does.
    response = user_client.generic("POST", "/api/ImageToText", b"--x", content_type="multipart/form-data")

    assert_refused(response, 400)


def test_multipart_without_a_boundary_on_generate_is_an_ollama_error(api_client: Client) -> None:
    response = api_client.generic("POST", "/api/generate", b"--x", content_type="multipart/form-data")

    assert response.status_code == 415
    assert response.json()["error"]


def test_too_many_form_fields_is_a_400_in_the_api_shape(api_client: Client) -> None:
    body = "&".join(f"f{n}=1" for n in range(1500))
    response = api_client.generic("POST", "/api/ImageToText", body, content_type="application/x-www-form-urlencoded")

    assert "too many" in assert_refused(response, 400)["message"]


def test_a_body_of_another_type_is_a_415(api_client: Client) -> None:
    response = api_client.generic("POST", "/api/ImageToText", b"\x89PNG", content_type="image/png")

    assert assert_refused(response, 415)["errorCode"] == "UnsupportedMediaType"


@pytest.mark.parametrize("ref_id", ["a&b=c", "has#hash", "with space", "plus+sign", "ünï/cödé?"])
def test_the_status_url_finds_the_job_whatever_its_ref_id(
    api_client: Client, ollama_agent, png_bytes, not_run, ref_id: str
) -> None:
    queued = api_client.post(
        "/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "RefId": ref_id}
    ).json()

    url = urlsplit(queued["statusUrl"])
    response = api_client.get(f"{url.path}?{url.query}")

    assert response.status_code == 200
    assert response.json()["jobId"] == queued["jobId"]
    assert response.json()["refId"] == ref_id


def test_the_ollama_status_url_finds_the_job_whatever_its_ref_id(
    api_client: Client, ollama_agent, png_bytes, not_run
) -> None:
    import base64

    body = {"request": {"model": "llava:7b", "images": [base64.b64encode(png_bytes).decode()]}, "refId": "x&y #1"}
    queued = api_client.post("/api/QueueOllamaGeneration", body, content_type="application/json").json()

    url = urlsplit(queued["statusUrl"])
    response = api_client.get(f"{url.path}?{url.query}")

    assert response.json()["jobId"] == queued["id"]

"""QueueImageToText and GetTextGenerationStatus: queued jobs, their status, and who may see them."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from imagetotext.models import ApiKey, Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", data, content_type="image/png")


@pytest.fixture
def not_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Keep queued jobs queued: record what would go to the workers."""
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


def test_queueing_answers_at_once_with_an_absolute_status_url(
    api_client: Client, ollama_agent, png_bytes, not_run
) -> None:
    response = api_client.post(
        "/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "Prompt": "Hi", "RefId": "mine-1"}
    )

    assert response.status_code == 200
    body = response.json()
    job = Job.objects.get()
    assert body["jobId"] == job.pk and body["refId"] == "mine-1"
    assert body["jobState"] == "Queued"
    assert body["statusUrl"] == "http://testserver/api/GetTextGenerationStatus?RefId=mine-1"
    assert not_run == [job.pk]


def test_a_queued_job_reports_queued_then_its_results(
    api_client: Client, ollama_agent, fake_ollama, png_bytes, not_run
) -> None:
    job_id = api_client.post("/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b"}).json()["jobId"]

    queued = api_client.get(f"/api/GetTextGenerationStatus?JobId={job_id}").json()
    from imagetotext.tasks import run_assigned

    run_assigned(job_id)
    done = api_client.get(f"/api/GetTextGenerationStatus?jobId={job_id}").json()

    assert queued["jobState"] == "Queued" and "results" not in queued
    assert done["jobState"] == "Completed"
    assert done["results"] == [{"text": fake_ollama.reply_for("llava:7b", "Describe this image.")}]
    assert done["duration"].startswith("PT")


def test_status_can_be_looked_up_by_the_clients_ref_id(api_client: Client, ollama_agent, png_bytes, not_run) -> None:
    api_client.post("/api/QueueImageToText?RefId=abc-123", {"image": upload(png_bytes), "Model": "llava:7b"})

    response = api_client.get("/api/GetTextGenerationStatus?RefId=abc-123")

    assert response.status_code == 200
    assert response.json()["refId"] == "abc-123"


def test_a_reused_ref_id_is_refused(api_client: Client, ollama_agent, png_bytes, not_run) -> None:
    api_client.post("/api/QueueImageToText?RefId=same", {"image": upload(png_bytes), "Model": "llava:7b"})
    response = api_client.post("/api/QueueImageToText?RefId=same", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert response.status_code == 400
    assert response.json()["responseStatus"]["errors"][0]["fieldName"] == "RefId"
    assert Job.objects.count() == 1


def test_a_failed_job_reports_its_error_in_response_status(
    api_client: Client, ollama_agent, fake_ollama, png_bytes, not_run
) -> None:
    job_id = api_client.post("/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b"}).json()["jobId"]
    fake_ollama.mode = "no_vision"
    from imagetotext.tasks import run_assigned

    run_assigned(job_id)
    body = api_client.get(f"/api/GetTextGenerationStatus?JobId={job_id}").json()

    assert body["jobState"] == "Failed"
    assert "cannot read images" in body["responseStatus"]["message"]


def test_an_unknown_job_is_a_404(api_client: Client) -> None:
    response = api_client.get("/api/GetTextGenerationStatus?JobId=999")

    assert response.status_code == 404
    assert response.json()["responseStatus"]["message"] == "Job not found"


def test_status_needs_a_job_id_or_ref_id(api_client: Client) -> None:
    response = api_client.get("/api/GetTextGenerationStatus")

    assert response.status_code == 400


def test_a_key_does_not_see_another_owners_jobs(
    api_client: Client, ollama_agent, png_bytes, not_run, django_user_model
) -> None:
    job_id = api_client.post("/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b"}).json()["jobId"]
    mallory = django_user_model.objects.create_user("mallory")
    other = Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(mallory, 'm')[1]}")

    assert other.get(f"/api/GetTextGenerationStatus?JobId={job_id}").status_code == 404


def test_status_needs_a_key(client: Client) -> None:
    assert client.get("/api/GetTextGenerationStatus?JobId=1").status_code == 401


def test_a_callback_to_a_private_address_is_refused_up_front(
    api_client: Client, ollama_agent, png_bytes, not_run
) -> None:
    response = api_client.post(
        "/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b", "ReplyTo": "http://127.0.0.1:9/cb"}
    )

    assert response.status_code == 400
    assert response.json()["responseStatus"]["errors"][0]["fieldName"] == "ReplyTo"
    assert Job.objects.count() == 0


def test_the_reply_to_and_state_are_kept_on_the_job(
    api_client: Client, ollama_agent, png_bytes, not_run, monkeypatch
) -> None:
    from imagetotext.conf import Conf

    monkeypatch.setattr(Conf, "CALLBACK_ALLOW_PRIVATE", True)
    api_client.post(
        "/api/QueueImageToText",
        {"image": upload(png_bytes), "Model": "llava:7b", "ReplyTo": "http://127.0.0.1:9/cb", "State": "s-1"},
    )

    job = Job.objects.get()
    assert (job.reply_to, job.reply_state, job.state) == ("http://127.0.0.1:9/cb", "s-1", State.QUEUED)

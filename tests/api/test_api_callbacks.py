"""ReplyTo from the client's side: queue a job, let it end, receive the callback."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from imagetotext.conf import Conf
from imagetotext.models import Job, State
from tests.jobs.test_callbacks import SECRET, Receiver, callback_conf, receiver  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


def queue(client: Client, png: bytes, reply_to: str, **fields: str):
    data = {"image": SimpleUploadedFile("a.png", png), "Model": "llava:7b", "ReplyTo": reply_to, **fields}
    return client.post("/api/QueueImageToText", data)


def test_a_completed_job_posts_its_text_and_the_clients_state(
    api_client, ollama_agent, fake_ollama, receiver, png_bytes
) -> None:
    response = queue(api_client, png_bytes, receiver.url, State="order-7", RefId="cb-1")

    [received] = receiver.requests
    body = received.json()
    assert response.status_code == 200
    assert body["state"] == "order-7" and body["refId"] == "cb-1"
    assert body["textOutputs"] == [{"text": fake_ollama.reply_for("llava:7b", "Describe this image.")}]
    assert body.get("responseStatus") is None
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers[Conf.CALLBACK_SIGNATURE_HEADER] == expected
    assert Job.objects.get().callback_attempts.get().delivered is True


def test_a_failed_job_posts_its_reason(api_client, ollama_agent, fake_ollama, receiver, png_bytes) -> None:
    fake_ollama.mode = "no_vision"

    queue(api_client, png_bytes, receiver.url)

    body = receiver.requests[0].json()
    assert body["textOutputs"] == []
    assert "cannot read images" in body["responseStatus"]["message"]
    assert Job.objects.get().state == State.FAILED


def test_a_receiver_that_is_down_leaves_the_job_completed_and_the_attempt_recorded(
    api_client, ollama_agent, png_bytes
) -> None:
    queue(api_client, png_bytes, "http://127.0.0.1:9/down")

    job = Job.objects.get()
    [attempt] = job.callback_attempts.all()
    assert job.state == State.COMPLETED
    assert attempt.delivered is False and attempt.error


def test_the_reply_to_header_works_like_the_field(api_client, ollama_agent, receiver, png_bytes) -> None:
    api_client.post(
        "/api/QueueImageToText",
        {"image": SimpleUploadedFile("a.png", png_bytes), "Model": "llava:7b"},
        HTTP_REPLYTO=receiver.url,
    )

    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0].body)["textOutputs"]


def test_reply_to_credentials_reach_the_receiver(api_client, ollama_agent, receiver, png_bytes) -> None:
    response = queue(api_client, png_bytes, "PUT tok-7@" + receiver.url)

    assert response.status_code == 200
    [request] = receiver.requests
    assert request.method == "PUT" and request.headers["Authorization"] == "Bearer tok-7"


@pytest.mark.parametrize(
    ("reply_to", "reason"),
    [
        ("$API_TOKEN@https://example.com/hook", "environment"),
        ("http.X-Signature-256:forged@https://example.com/hook", "set by the callback itself"),
        ("DELETE https://example.com/hook", "method DELETE"),
    ],
)
def test_a_reply_to_this_server_will_not_call_is_refused_up_front(
    api_client, ollama_agent, png_bytes, reply_to, reason
) -> None:
    response = queue(api_client, png_bytes, reply_to)

    assert response.status_code == 400
    status = response.json()["responseStatus"]
    assert reason in status["message"] and status["errors"][0]["fieldName"] == "ReplyTo"
    assert Job.objects.count() == 0

"""OllamaGeneration, /api/generate, QueueOllamaGeneration and GetOllamaGenerationStatus."""

from __future__ import annotations

import base64
import json

import pytest
from django.test import Client

from imagetotext.models import Api, Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def generate(client: Client, path: str = "/api/OllamaGeneration", **body: object):
    return client.post(path, json.dumps(body), content_type="application/json")


@pytest.fixture
def b64(png_bytes: bytes) -> str:
    return base64.b64encode(png_bytes).decode()


@pytest.mark.usefixtures("jobs_run_inline")
def test_ollama_generation_answers_like_ollama_without_streaming(api_client, ollama_agent, fake_ollama, b64) -> None:
    response = generate(api_client, model="llava:7b", prompt="Describe", images=[b64])

    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "llava:7b" and body["done"] is True and body["done_reason"] == "stop"
    assert body["response"] == fake_ollama.reply_for("llava:7b", "Describe")
    assert body["eval_count"] > 0 and body["total_duration"] > 0
    assert body["created_at"].endswith("Z")
    assert Job.objects.get().api == Api.OLLAMA_GENERATION


@pytest.mark.usefixtures("jobs_run_inline")
def test_generate_passes_ollama_options_through(api_client, ollama_agent, fake_ollama, b64) -> None:
    generate(
        api_client,
        "/api/generate",
        model="llava:7b",
        prompt="Hi",
        images=[b64],
        stream=False,
        options={"temperature": 0},
        system="Be brief",
        keep_alive="1m",
    )

    [sent] = [r.json for r in fake_ollama.requests if r.path == "/api/generate"]
    assert sent["options"] == {"temperature": 0} and sent["system"] == "Be brief" and sent["keep_alive"] == "1m"


def test_a_data_url_is_refused_as_ollama_does(api_client, ollama_agent, b64) -> None:
    response = generate(api_client, model="llava:7b", prompt="x", images=["data:image/png;base64," + b64])

    assert response.status_code == 400
    assert "illegal base64 data at input byte 4" in response.json()["error"]
    assert response.json()["responseStatus"]["errorCode"] == "ArgumentException"
    assert Job.objects.count() == 0


def test_bad_base64_is_refused(api_client, ollama_agent) -> None:
    response = generate(api_client, model="llava:7b", prompt="x", images=["not*base64"])

    assert response.status_code == 400
    assert response.json()["error"].startswith("illegal base64 data")


def test_several_images_for_a_model_that_reads_one_are_refused(api_client, comfy_agent, b64) -> None:
    response = generate(api_client, model="microsoft/Florence-2-base", prompt="x", images=[b64, b64])

    assert response.status_code == 400
    assert "reads one image per request" in response.json()["error"]
    assert Job.objects.count() == 0


def test_a_missing_model_is_refused(api_client, ollama_agent, b64) -> None:
    response = generate(api_client, prompt="x", images=[b64])

    assert response.status_code == 400
    assert response.json()["error"] == "model is required"


def test_an_unknown_model_is_a_404_with_an_ollama_error(api_client, ollama_agent, b64) -> None:
    response = generate(api_client, model="nope:1b", prompt="x", images=[b64])

    assert response.status_code == 404
    assert response.json()["error"] == "Model nope:1b not found"


def test_invalid_json_is_a_400(api_client, ollama_agent) -> None:
    response = api_client.post("/api/generate", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_queue_ollama_generation_answers_with_id_ref_and_status_url(api_client, ollama_agent, b64, monkeypatch) -> None:
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *a, **kw: None)

    response = generate(
        api_client,
        "/api/QueueOllamaGeneration",
        request={"model": "llava:7b", "prompt": "Hi", "images": [b64]},
        refId="q-1",
        tag="batch",
    )

    assert response.status_code == 200
    body = response.json()
    job = Job.objects.get()
    assert body == {
        "id": job.pk,
        "refId": "q-1",
        "statusUrl": "http://testserver/api/GetOllamaGenerationStatus?RefId=q-1",
    }
    assert (job.tag, job.state) == ("batch", State.QUEUED)


def test_queue_ollama_generation_needs_a_request_object(api_client, ollama_agent) -> None:
    response = generate(api_client, "/api/QueueOllamaGeneration", refId="q-2")

    assert response.status_code == 400
    assert response.json()["responseStatus"]["errors"] == [
        {
            "errorCode": "ArgumentException",
            "fieldName": "Request",
            "message": "Request must hold an Ollama generate request",
        }
    ]


@pytest.mark.usefixtures("jobs_run_inline")
def test_ollama_status_has_the_ollama_result_once_completed(api_client, ollama_agent, fake_ollama, b64) -> None:
    generate(
        api_client,
        "/api/QueueOllamaGeneration",
        request={"model": "gemma3:4b", "prompt": "Go", "images": [b64]},
        refId="q-3",
    )

    body = api_client.get("/api/GetOllamaGenerationStatus?RefId=q-3").json()

    assert body["jobState"] == "Completed"
    assert body["result"]["response"] == fake_ollama.reply_for("gemma3:4b", "Go")
    assert body["result"]["done"] is True


@pytest.mark.usefixtures("jobs_run_inline")
def test_ollama_status_explains_a_failure(api_client, ollama_agent, fake_ollama, b64) -> None:
    fake_ollama.mode = "no_vision"
    generate(
        api_client,
        "/api/QueueOllamaGeneration",
        request={"model": "llava:7b", "prompt": "Go", "images": [b64]},
        refId="q-4",
    )

    body = api_client.get("/api/GetOllamaGenerationStatus?RefId=q-4").json()

    assert body["jobState"] == "Failed"
    assert "cannot read images" in body["responseStatus"]["message"]
    assert "result" not in body


def test_ollama_generation_needs_a_key(client: Client, b64) -> None:
    response = generate(client, model="llava:7b", prompt="x", images=[b64])

    assert response.status_code == 401


def test_refusals_before_the_view_still_carry_an_ollama_error(client: Client, b64) -> None:
    unauthorised = generate(client, "/api/generate", model="llava:7b", prompt="x", images=[b64])
    wrong_method = client.get("/api/generate")

    assert unauthorised.status_code == 401 and unauthorised.json()["error"] == "A valid API key is required"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "GET is not allowed here"


@pytest.mark.usefixtures("jobs_run_inline")
def test_keys_of_the_generate_request_are_read_in_any_case(api_client, ollama_agent, fake_ollama, b64) -> None:
    response = generate(api_client, Model="llava:7b", Prompt="Shout", Images=[b64])

    assert response.status_code == 200
    assert response.json()["response"] == fake_ollama.reply_for("llava:7b", "Shout")

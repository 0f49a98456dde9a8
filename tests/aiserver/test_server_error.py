from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db(transaction=True)
def test_a_crash_in_the_api_answers_json_in_ai_servers_shape(api_client: Client, monkeypatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("imagetotext.api.image_to_text.find_job", crash)
    api_client.raise_request_exception = False

    response = api_client.get("/api/GetTextGenerationStatus?JobId=1")

    assert response.status_code == 500
    assert response.json()["responseStatus"]["errorCode"] == "Exception"
    assert "boom" not in response.content.decode()


@pytest.mark.django_db
def test_an_unknown_api_path_answers_json_in_ai_servers_and_ollamas_shape(client: Client) -> None:
    response = client.post("/api/NoSuchOperation", {"Model": "x"})

    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    body = response.json()
    assert body["responseStatus"]["errorCode"] == "NotFound"
    assert body["error"] == body["responseStatus"]["message"] == "No API route POST /api/NoSuchOperation"


@pytest.mark.django_db
def test_an_unknown_openai_path_answers_openais_error_object(client: Client) -> None:
    response = client.get("/v1/embeddings")

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "No API route GET /v1/embeddings"
    assert response.json()["error"]["type"] == "not_found_error"  # as Ollama's OpenAI layer types a 404


@pytest.mark.django_db
def test_an_unknown_page_is_still_a_page(client: Client) -> None:
    response = client.get("/no-such-page")

    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")

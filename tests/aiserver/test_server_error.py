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

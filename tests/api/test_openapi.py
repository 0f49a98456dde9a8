"""The OpenAPI document and /api/docs: well-formed, complete, and true to what the API answers."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import AsyncClient, Client
from django.urls import URLPattern, resolve

from imagetotext.api import openai_urls
from imagetotext.api import urls as api_urls
from imagetotext.api.openapi import build_document
from imagetotext.callbacks import callback_body
from imagetotext.models import Job

DOC = build_document()
OPERATIONS = {(path, method): op for path, item in DOC["paths"].items() for method, op in item.items()}


# --- helpers ---------------------------------------------------------------------


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def lookup(pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = DOC
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def undocumented(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Every key in value (at any depth) that the schema does not name."""
    if "$ref" in schema:
        return undocumented(value, lookup(schema["$ref"]), where)
    if "anyOf" in schema:
        return [] if value is None else undocumented(value, schema["anyOf"][0], where)
    if isinstance(value, list) and "items" in schema:
        return [key for item in value for key in undocumented(item, schema["items"], where + "[]")]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        missing = [f"{where}.{key}" for key in value if key not in properties]
        return missing + [
            k
            for key, v in value.items()
            if key in properties
            for k in undocumented(v, properties[key], f"{where}.{key}")
        ]
    return []


def documented_schema(response: HttpResponse, path: str, method: str = "post") -> dict[str, Any]:
    """The schema the document gives for this status and content type; fails if there is none."""
    responses = OPERATIONS[(path, method)]["responses"]
    assert str(response.status_code) in responses, f"{path} answered an undocumented {response.status_code}"
    media = response["Content-Type"].split(";")[0]
    return responses[str(response.status_code)]["content"][media]["schema"]


def assert_documented(response: HttpResponse, path: str, method: str = "post") -> dict[str, Any]:
    body = response.json()
    assert undocumented(body, documented_schema(response, path, method)) == []
    return body


def upload(data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("photo.png", data, content_type="image/png")


def generate_request(png: bytes, **fields: Any) -> dict[str, Any]:
    return {"model": "llava:7b", "prompt": "What is it?", "images": [base64.b64encode(png).decode()], **fields}


def post_json(client: Client, path: str, body: dict[str, Any]) -> HttpResponse:
    return client.post(path, json.dumps(body), content_type="application/json")


# --- the document itself -----------------------------------------------------------


def test_every_ref_resolves() -> None:
    found = list(refs(DOC))

    assert found
    for pointer in found:
        assert isinstance(lookup(pointer), dict), pointer


def test_every_schema_is_used_somewhere() -> None:
    used = {pointer.rsplit("/", 1)[1] for pointer in refs(DOC)}

    assert set(DOC["components"]["schemas"]) - used == set()


def test_operation_ids_are_unique() -> None:
    counts = Counter(op["operationId"] for op in OPERATIONS.values())

    assert [name for name, n in counts.items() if n > 1] == []


def test_every_documented_path_is_a_real_route() -> None:
    for path in DOC["paths"]:
        resolve(path)  # raises Resolver404 if Django does not route it


def test_every_api_route_is_documented() -> None:
    # The document and its page describe the API; they are not operations of it.
    about = {"openapi-json", "api-docs"}
    routes = set()
    for prefix, module in (("/api/", api_urls), ("/v1/", openai_urls)):
        patterns = [p for p in module.urlpatterns if isinstance(p, URLPattern) and p.name not in about]
        routes |= {prefix + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(p.pattern)) for p in patterns}

    assert routes - set(DOC["paths"]) == set()


def test_operations_that_need_a_key_document_401_403_and_429() -> None:
    for (path, _), op in OPERATIONS.items():
        if op.get("security", DOC["security"]):
            assert {"401", "403", "429"} <= set(op["responses"]), path


@pytest.mark.django_db
def test_operations_that_need_a_key_refuse_a_call_without_one(client: Client) -> None:
    for (path, method), op in OPERATIONS.items():
        response = getattr(client, method)(path)

        needs_key = op.get("security", DOC["security"]) != []
        assert (response.status_code == 401) == needs_key, path


# --- real replies match the document ---------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_image_to_text_replies_as_documented(api_client: Client, ollama_agent, png_bytes) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})

    assert response.status_code == 200
    assert assert_documented(response, "/api/ImageToText")["results"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_image_to_text_with_florence_replies_as_documented(api_client: Client, comfy_agent, png_bytes) -> None:
    response = api_client.post("/api/ImageToText", {"image": upload(png_bytes)})

    assert response.status_code == 200
    assert_documented(response, "/api/ImageToText")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_queue_image_to_text_and_its_status_reply_as_documented(api_client: Client, ollama_agent, png_bytes) -> None:
    queued = api_client.post("/api/QueueImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})
    status = api_client.get(f"/api/GetTextGenerationStatus?JobId={queued.json()['jobId']}")

    assert queued.status_code == 200 and status.status_code == 200
    assert_documented(queued, "/api/QueueImageToText")
    assert assert_documented(status, "/api/GetTextGenerationStatus", "get")["results"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_ollama_generation_replies_as_documented(api_client: Client, ollama_agent, png_bytes) -> None:
    response = post_json(api_client, "/api/OllamaGeneration", generate_request(png_bytes))

    assert response.status_code == 200
    assert assert_documented(response, "/api/OllamaGeneration")["done"] is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline", "async_orm_connections_closed")
async def test_each_streamed_generate_line_is_documented(api_key: str, ollama_agent, png_bytes) -> None:
    body = json.dumps(generate_request(png_bytes))
    response = await AsyncClient().post(
        "/api/generate", body, content_type="application/json", headers={"Authorization": f"Bearer {api_key}"}
    )

    assert response.status_code == 200, response.content
    lines = [json.loads(line) async for chunk in response.streaming_content for line in chunk.splitlines()]
    schema = documented_schema(response, "/api/generate")
    assert lines and lines[-1]["done"] is True
    assert [key for line in lines for key in undocumented(line, schema)] == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_queue_ollama_generation_and_its_status_reply_as_documented(
    api_client: Client, ollama_agent, png_bytes
) -> None:
    queued = post_json(api_client, "/api/QueueOllamaGeneration", {"request": generate_request(png_bytes)})
    status = api_client.get(f"/api/GetOllamaGenerationStatus?JobId={queued.json()['id']}")

    assert queued.status_code == 200 and status.status_code == 200
    assert_documented(queued, "/api/QueueOllamaGeneration")
    assert assert_documented(status, "/api/GetOllamaGenerationStatus", "get")["result"]["response"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_a_florence_model_through_ollama_generation_replies_as_documented(
    api_client: Client, comfy_agent, png_bytes
) -> None:
    body = generate_request(png_bytes, model="microsoft/Florence-2-base")
    response = post_json(api_client, "/api/OllamaGeneration", body)

    assert response.status_code == 200
    assert_documented(response, "/api/OllamaGeneration")


@pytest.mark.django_db(transaction=True)
def test_active_ai_models_replies_as_documented(api_client: Client, ollama_agent) -> None:
    response = api_client.get("/api/ActiveAiModels?Vision=true")

    assert response.status_code == 200
    assert assert_documented(response, "/api/ActiveAiModels", "get")["models"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("jobs_run_inline")
def test_the_callback_body_is_documented(api_client: Client, ollama_agent, png_bytes) -> None:
    api_client.post("/api/ImageToText", {"image": upload(png_bytes), "Model": "llava:7b"})
    callback = DOC["paths"]["/api/QueueImageToText"]["post"]["callbacks"]["GenerationCallback"]
    [item] = callback.values()

    body = callback_body(Job.objects.get())
    assert undocumented(body, item["post"]["requestBody"]["content"]["application/json"]["schema"]) == []


@pytest.mark.django_db(transaction=True)
def test_errors_reply_as_documented(client: Client, api_client: Client, ollama_agent, png_bytes, monkeypatch) -> None:
    unauthorized = client.post("/api/ImageToText")
    bad = api_client.get("/api/GetTextGenerationStatus")
    not_found = post_json(api_client, "/api/OllamaGeneration", generate_request(png_bytes, model="nope:1b"))
    monkeypatch.setattr("imagetotext.conf.Conf.MAX_UPLOAD_BYTES", 100)
    too_big = api_client.post("/api/ImageToText", {"image": upload(png_bytes * 2)})

    assert (unauthorized.status_code, bad.status_code, not_found.status_code) == (401, 400, 404)
    assert assert_documented(unauthorized, "/api/ImageToText")["responseStatus"]["errorCode"] == "Unauthorized"
    assert assert_documented(bad, "/api/GetTextGenerationStatus", "get")["responseStatus"]["errors"]
    assert assert_documented(not_found, "/api/OllamaGeneration")["error"]
    assert too_big.status_code == 413 and assert_documented(too_big, "/api/ImageToText")


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_call_replies_as_documented(api_client: Client, monkeypatch) -> None:
    monkeypatch.setattr("imagetotext.conf.Conf.RATE_LIMIT_PER_MINUTE", 1)

    api_client.get("/api/GetOllamaGenerationStatus?JobId=1")
    response = api_client.get("/api/GetOllamaGenerationStatus?JobId=1")

    assert response.status_code == 429
    assert "Retry-After" in DOC["paths"]["/api/GetOllamaGenerationStatus"]["get"]["responses"]["429"]["headers"]
    assert response["Retry-After"]
    assert assert_documented(response, "/api/GetOllamaGenerationStatus", "get")["responseStatus"]


# --- the served document and page --------------------------------------------------


@pytest.mark.django_db
def test_openapi_json_is_served_without_a_key(client: Client) -> None:
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads(json.dumps(DOC))


@pytest.mark.django_db
def test_the_docs_page_names_every_operation_with_an_anchor(client: Client) -> None:
    response = client.get("/api/docs")

    assert response.status_code == 200
    page = response.content.decode()
    for op in OPERATIONS.values():
        assert f'id="{op["operationId"]}"' in page and f'href="#{op["operationId"]}"' in page


@pytest.mark.django_db
def test_the_docs_page_shows_a_multipart_curl_example_and_error_statuses(client: Client) -> None:
    page = client.get("/api/docs").content.decode()

    assert "-F image=@photo.jpg" in page
    assert "-H &#x27;Content-Type: application/json&#x27;" in page
    assert all(f">{status}<" in page for status in ("400", "401", "403", "404", "405", "413", "429", "500"))
    assert "cdn" not in page.lower() and "<script" not in page

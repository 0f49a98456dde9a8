"""Ollama's /api/tags, /api/show, /api/ps, /api/version and OpenAI's /v1/models, over the models agents offer."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import ollama
import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from agents.models import Agent, AgentModel, Capability, DiscoveredModel, Discovery, Kind
from imagetotext.api.model_listing import OLLAMA_API_VERSION
from imagetotext.api.openai_wire import openai_error
from imagetotext.models import ApiKey, Job, State
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.ollama import FakeOllama
from tests.live_server import LiveServer, live_server

django_db = pytest.mark.django_db(transaction=True)


def agent_with(name: str, kind: str, models: list[DiscoveredModel], **fields: object) -> Agent:
    agent = Agent.objects.create(name=name, kind=kind, base_url=f"http://{name}:1" if kind != Kind.LOCAL else "")
    agent.mark_online(Discovery(version="1", models=models))
    Agent.objects.filter(pk=agent.pk).update(**fields)
    return agent


def ocr_agent() -> Agent:
    details = {"engine": "RapidOCR", "output": "text in reading order"}
    return agent_with("ocr", Kind.LOCAL, [DiscoveredModel("local/ocr", Capability.OCR, details)])


def tags(client: Client) -> dict[str, dict]:
    response = client.get("/api/tags")
    assert response.status_code == 200
    return {entry["name"]: entry for entry in response.json()["models"]}


def show(client: Client, body: object) -> object:
    return client.post("/api/show", json.dumps(body), content_type="application/json")


def parsed(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --- /api/tags ------------------------------------------------------------------


@django_db
def test_tags_lists_the_vision_models_with_what_ollama_told_discovery(api_client, ollama_agent, fake_ollama) -> None:
    listed = tags(api_client)

    assert {"llava:7b", "gemma3:4b"} <= listed.keys()
    assert "llama3.2:3b" not in listed  # text only: this server cannot give it an image
    llava, fake = listed["llava:7b"], fake_ollama.find_model("llava:7b")
    assert llava["model"] == "llava:7b" and llava["size"] == fake.size
    assert llava["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "7B",
        "quantization_level": "Q4_0",
    }
    assert llava["capabilities"] == ["completion", "vision"]


@django_db
def test_tags_gives_a_stable_digest_and_the_last_discovery_as_modified_at(api_client, ollama_agent) -> None:
    entry = tags(api_client)["gemma3:4b"]
    row = AgentModel.objects.get(name="gemma3:4b")

    assert entry["digest"] == hashlib.sha256(b"gemma3:4b").hexdigest()
    assert parsed(entry["modified_at"]) == row.updated_at
    assert tags(api_client)["gemma3:4b"]["digest"] == entry["digest"]


@django_db
def test_tags_describes_florence_and_the_built_in_ocr_in_ollamas_shape(api_client, comfy_agent) -> None:
    ocr_agent()

    listed = tags(api_client)

    large = listed["microsoft/Florence-2-large"]
    assert large["details"] == {
        "parent_model": "",
        "format": "comfyui",
        "family": "florence2",
        "families": ["florence2"],
        "parameter_size": "0.77B",
        "quantization_level": "F16",
    }
    assert large["capabilities"] == ["completion", "vision"] and large["size"] == 0
    assert listed["MiaoshouAI/Florence-2-base-PromptGen-v2.0"]["details"]["parameter_size"] == "0.23B"
    ocr = listed["local/ocr"]
    assert (ocr["details"]["format"], ocr["details"]["family"], ocr["details"]["families"]) == ("onnx", "ocr", ["ocr"])
    assert ocr["capabilities"] == ["completion", "vision"]


@django_db
def test_a_model_on_two_agents_is_listed_once(api_client, ollama_agent) -> None:
    agent_with("gpu2", Kind.OLLAMA, [DiscoveredModel("llava:7b", Capability.VISION, {"family": "llava"})], priority=5)

    names = [entry["name"] for entry in api_client.get("/api/tags").json()["models"]]

    assert names.count("llava:7b") == 1
    assert tags(api_client)["llava:7b"]["details"]["family"] == "llava"  # the higher priority agent's row


@django_db
def test_models_of_offline_or_disabled_agents_are_not_listed(api_client) -> None:
    agent_with("down", Kind.OLLAMA, [DiscoveredModel("gemma3:4b", Capability.VISION)]).mark_offline("refused")
    agent_with("off", Kind.OLLAMA, [DiscoveredModel("qwen2.5vl:7b", Capability.VISION)], enabled=False)

    assert api_client.get("/api/tags").json() == {"models": []}


@django_db
def test_tags_answers_head_and_refuses_post_with_an_error_member(api_client, ollama_agent) -> None:
    assert api_client.head("/api/tags").status_code == 200

    response = api_client.post("/api/tags")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"] == "POST is not allowed here"


@django_db
@pytest.mark.parametrize("path", ["/api/tags", "/api/ps"])
def test_listing_needs_a_key_and_says_so_in_ollamas_error(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 401
    assert response.json()["error"] == "A valid API key is required"


@django_db
def test_a_key_restricted_to_other_apis_may_not_list(client: Client, api_user) -> None:
    key = ApiKey.issue(api_user, "generate only", restrict_to=["OllamaGeneration"])[1]

    response = client.get("/api/tags", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 403
    assert response.json()["error"] == "This API key may not call OllamaTags"


@django_db
def test_a_key_restricted_to_ollama_tags_may_list_and_show(client: Client, api_user, ollama_agent) -> None:
    key = ApiKey.issue(api_user, "listing", restrict_to=["OllamaTags"])[1]
    headers = {"Authorization": f"Bearer {key}"}

    assert client.get("/api/tags", headers=headers).status_code == 200
    body = json.dumps({"model": "llava:7b"})
    assert client.post("/api/show", body, content_type="application/json", headers=headers).status_code == 200


@django_db
def test_a_signed_in_user_can_list_without_a_key(user_client: Client, ollama_agent) -> None:
    assert "llava:7b" in tags(user_client)


# --- /api/show ------------------------------------------------------------------


@django_db
def test_show_gives_the_details_and_capabilities_of_a_listed_model(api_client, ollama_agent) -> None:
    response = show(api_client, {"model": "llava:7b"})

    assert response.status_code == 200
    body = response.json()
    assert body["details"] == tags(api_client)["llava:7b"]["details"]
    assert body["capabilities"] == ["completion", "vision"]
    assert body["model_info"] == {"general.architecture": "llama"}
    assert (body["modelfile"], body["parameters"], body["template"]) == ("", "", "")
    assert parsed(body["modified_at"]) == AgentModel.objects.get(name="llava:7b").updated_at


@django_db
def test_show_takes_the_legacy_name_member(api_client, ollama_agent) -> None:
    response = show(api_client, {"name": "gemma3:4b"})

    assert response.status_code == 200
    assert response.json()["details"]["family"] == "gemma3"


@django_db
def test_show_finds_a_latest_tag_and_a_florence_short_name(api_client, comfy_agent) -> None:
    agent_with("gpu", Kind.OLLAMA, [DiscoveredModel("moondream:latest", Capability.VISION, {"family": "phi2"})])

    assert show(api_client, {"model": "moondream"}).json()["details"]["family"] == "phi2"
    florence = show(api_client, {"model": "Florence-2-large"}).json()
    assert florence["details"]["family"] == "florence2" and florence["details"]["parameter_size"] == "0.77B"


@django_db
@pytest.mark.parametrize("name", ["nope:1b", "llama3.2:3b"])
def test_show_answers_404_for_a_model_that_is_not_listed(api_client, ollama_agent, name: str) -> None:
    response = show(api_client, {"model": name})

    assert response.status_code == 404
    assert response.json()["error"] == f"model '{name}' not found"


@django_db
@pytest.mark.parametrize("body", [{}, {"model": ""}, {"model": "  "}])
def test_show_needs_a_model(api_client, ollama_agent, body: dict) -> None:
    response = show(api_client, body)

    assert response.status_code == 400
    assert response.json()["error"] == "model is required"


@django_db
def test_show_refuses_a_body_that_is_not_json(api_client, ollama_agent) -> None:
    response = api_client.post("/api/show", "{model: llava", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"].startswith("The body is not valid JSON")


@django_db
def test_show_refuses_a_model_that_is_not_a_string(api_client, ollama_agent) -> None:
    response = show(api_client, {"model": ["llava:7b"]})

    assert response.status_code == 400
    assert response.json()["error"] == "model must be a string"


@django_db
def test_show_is_post_only(api_client, ollama_agent) -> None:
    response = api_client.get("/api/show")

    assert response.status_code == 405
    assert response.json()["error"] == "GET is not allowed here"


# --- /api/version ---------------------------------------------------------------


@django_db
def test_version_needs_no_key(client: Client) -> None:
    response = client.get("/api/version")

    assert response.status_code == 200
    assert response.json() == {"version": OLLAMA_API_VERSION}
    assert client.head("/api/version").status_code == 200


def test_the_version_reads_as_an_ollama_version() -> None:
    assert [part.isdigit() for part in OLLAMA_API_VERSION.split(".")] == [True, True, True]


@django_db
def test_version_refuses_post_with_an_error_member(client: Client) -> None:
    response = client.post("/api/version")

    assert response.status_code == 405
    assert response.json()["error"] == "POST is not allowed here"


# --- /api/ps --------------------------------------------------------------------


def job(model: str, state: str, owner) -> Job:
    return Job.objects.create(owner=owner, model=model, state=state, started_at=timezone.now())


@django_db
def test_ps_is_empty_when_nothing_runs(api_client, ollama_agent, api_user) -> None:
    job("llava:7b", State.QUEUED, api_user)
    job("gemma3:4b", State.COMPLETED, api_user)

    response = api_client.get("/api/ps")

    assert response.status_code == 200
    assert response.json() == {"models": []}


@django_db
def test_ps_lists_each_model_with_running_jobs_once(api_client, ollama_agent, comfy_agent, api_user) -> None:
    job("llava:7b", State.STARTED, api_user)
    job("llava:7b", State.STARTED, api_user)
    job("microsoft/Florence-2-base", State.STARTED, api_user)
    job("gemma3:4b", State.QUEUED, api_user)
    before = timezone.now()

    models = api_client.get("/api/ps").json()["models"]

    assert [entry["name"] for entry in models] == ["llava:7b", "microsoft/Florence-2-base"]
    llava = models[0]
    assert llava["model"] == "llava:7b" and llava["size_vram"] == 0
    assert llava["details"] == tags(api_client)["llava:7b"]["details"]
    assert llava["digest"] == hashlib.sha256(b"llava:7b").hexdigest() and llava["size"] > 0
    expires = parsed(llava["expires_at"])
    assert before + timedelta(minutes=4) < expires <= timezone.now() + timedelta(minutes=5)


@django_db
def test_ps_still_names_a_running_model_whose_agent_forgot_it(api_client, api_user) -> None:
    job("vanished:1b", State.STARTED, api_user)

    [entry] = api_client.get("/api/ps").json()["models"]

    assert entry["name"] == "vanished:1b" and entry["details"]["family"] == ""


# --- /v1/models -----------------------------------------------------------------


@django_db
def test_openai_models_lists_the_same_models_owned_by_their_agent_kind(api_client, ollama_agent, comfy_agent) -> None:
    ocr_agent()

    response = api_client.get("/v1/models")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    models = {entry["id"]: entry for entry in body["data"]}
    assert list(models) == list(tags(api_client))
    assert models["llava:7b"]["owned_by"] == "ollama" and models["local/ocr"]["owned_by"] == "local"
    florence = models["microsoft/Florence-2-base"]
    assert florence["object"] == "model" and florence["owned_by"] == "comfyui"
    updated = AgentModel.objects.get(name="microsoft/Florence-2-base").updated_at
    assert florence["created"] == int(updated.timestamp())


@django_db
def test_openai_model_gives_one_model_whose_name_has_a_slash(api_client, comfy_agent) -> None:
    response = api_client.get("/v1/models/microsoft/Florence-2-base")

    assert response.status_code == 200
    assert response.json()["id"] == "microsoft/Florence-2-base"
    assert response.json()["owned_by"] == "comfyui"


@django_db
def test_openai_model_answers_404_in_openais_shape(api_client, ollama_agent) -> None:
    response = api_client.get("/v1/models/llama3.2:3b")

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "The model 'llama3.2:3b' does not exist",
            "type": "not_found_error",
            "param": None,
            "code": "model_not_found",
        }
    }


@django_db
@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/llava:7b"])
def test_openai_models_refuse_a_missing_key_in_openais_shape(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {
        "error": {
            "message": "A valid API key is required",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


@django_db
def test_openai_models_refuse_a_key_for_other_apis_as_a_permission_error(client: Client, api_user) -> None:
    key = ApiKey.issue(api_user, "tags only", restrict_to=["OllamaTags"])[1]

    response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})

    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    assert response.json()["error"]["message"] == "This API key may not call OpenAiModels"


@django_db
def test_openai_models_refuse_post_in_openais_shape(api_client) -> None:
    response = api_client.post("/v1/models")

    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["error"]["type"] == "api_error"
    assert response.json()["error"]["message"] == "POST is not allowed here"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (413, "invalid_request_error"),
        (422, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
    ],
)
def test_openai_error_types_follow_the_status(status: int, kind: str) -> None:
    response = openai_error(status, "No.", "some_code")

    assert response.status_code == status
    assert json.loads(response.content) == {
        "error": {"message": "No.", "type": kind, "param": None, "code": "some_code"}
    }


# --- the official ollama client against the real server -------------------------


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with FakeOllama(chunk_delay=0.3) as fake_ollama, FakeComfyUI(run_seconds=0.2) as fake_comfyui:
        data = tmp_path_factory.mktemp("listing")
        env = {"OLLAMA_URLS": fake_ollama.url, "COMFYUI_URLS": fake_comfyui.url, "ADMIN_PASSWORD": "pw-12345678"}
        with live_server(data, **env) as server:
            yield server


@pytest.fixture(scope="module")
def live_key(running: LiveServer) -> str:
    return running.manage("createapikey", "listing", "--owner", "admin").strip()


@pytest.fixture
def ollama_client(running: LiveServer, live_key: str) -> ollama.Client:
    return ollama.Client(host=running.url, headers={"Authorization": f"Bearer {live_key}"}, timeout=30)


@pytest.mark.slow
def test_the_ollama_client_lists_and_shows_the_models(ollama_client: ollama.Client) -> None:
    listed = {model.model: model for model in ollama_client.list().models}

    assert {"llava:7b", "gemma3:4b", "microsoft/Florence-2-base", "local/ocr"} <= listed.keys()
    assert "llama3.2:3b" not in listed
    assert listed["llava:7b"].details.family == "llama" and listed["llava:7b"].size > 0
    shown = ollama_client.show("llava:7b")
    assert "vision" in shown.capabilities and shown.details.parameter_size == "7B"
    assert ollama_client.show("Florence-2-base").details.family == "florence2"


@pytest.mark.slow
def test_the_ollama_client_hears_404_for_an_unknown_model(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as raised:
        ollama_client.show("nope:1b")

    assert raised.value.status_code == 404
    assert raised.value.error == "model 'nope:1b' not found"


@pytest.mark.slow
def test_the_ollama_client_sees_a_running_model_in_ps(ollama_client: ollama.Client) -> None:
    assert ollama_client.ps().models == []
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "teal").save(png, "PNG")
    generation = threading.Thread(
        target=ollama_client.generate, kwargs={"model": "gemma3:4b", "prompt": "Slowly", "images": [png.getvalue()]}
    )
    generation.start()
    try:
        running_names = wait_for_ps(ollama_client, seconds=20)
    finally:
        generation.join(timeout=60)

    assert running_names == ["gemma3:4b"]
    assert wait_for_ps(ollama_client, seconds=20, until_empty=True) == []


def wait_for_ps(ollama_client: ollama.Client, seconds: float, until_empty: bool = False) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        names = [str(model.model) for model in ollama_client.ps().models]
        if bool(names) != until_empty or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


@pytest.mark.slow
def test_version_and_head_tags_answer_over_http(running: LiveServer, live_key: str) -> None:
    server = running
    assert httpx.get(server.url + "/api/version").json() == {"version": OLLAMA_API_VERSION}
    head = httpx.head(server.url + "/api/tags", headers={"Authorization": f"Bearer {live_key}"})
    assert head.status_code == 200 and head.content == b""

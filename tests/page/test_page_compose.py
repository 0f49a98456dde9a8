"""The compose form: models grouped by backend, the empty state, presets."""

from __future__ import annotations

import re

import pytest

from agents.models import Agent, AgentModel, Capability, Kind

pytestmark = pytest.mark.django_db(transaction=True)


def optgroups(html: str) -> dict[str, list[str]]:
    groups = re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', html, re.S)
    return {label: re.findall(r'<option value="([^"]+)"', body) for label, body in groups}


def test_it_groups_usable_models_by_backend(user_client, ollama_agent, comfy_agent):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL, online=True)
    AgentModel.objects.create(agent=local, name="local/ocr", capability=Capability.OCR)
    html = user_client.get("/ImageToText").content.decode()
    groups = optgroups(html)
    assert list(groups) == ["Ollama vision models", "Florence-2 on ComfyUI", "Local OCR"]
    assert groups["Ollama vision models"] == ["gemma3:4b", "llava:7b"]  # not the text-only llama3.2
    assert "microsoft/Florence-2-base" in groups["Florence-2 on ComfyUI"]
    assert groups["Local OCR"] == ["local/ocr"]
    assert 'id="no-models"' not in html


def test_models_of_offline_agents_are_not_offered(user_client, ollama_agent, comfy_agent):
    ollama_agent.mark_offline("connection refused")
    groups = optgroups(user_client.get("/ImageToText").content.decode())
    assert list(groups) == ["Florence-2 on ComfyUI"]


def test_with_only_the_built_in_ocr_it_says_captions_need_another_agent(user_client):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL, online=True)
    AgentModel.objects.create(agent=local, name="local/ocr", capability=Capability.OCR)

    html = user_client.get("/ImageToText").content.decode()

    assert optgroups(html) == {"Local OCR": ["local/ocr"]}
    assert "Only text extraction is available" in html
    assert "manage.py agent add ollama http://HOST:11434" in html


def test_with_nothing_usable_it_says_so_and_how_to_add_an_agent(user_client):
    html = user_client.get("/ImageToText").content.decode()
    assert "No model can take images right now." in html
    assert "OLLAMA_URLS=http://HOST:11434" in html
    assert "manage.py agent add ollama http://HOST:11434" in html
    assert 'href="/admin/agents/agent/add/"' in html
    assert re.search(r'<button type="submit" class="button button--primary" disabled>', html)


def test_the_presets_fill_the_prompt_and_know_their_florence_task(user_client, ollama_agent):
    html = user_client.get("/ImageToText").content.decode()
    for label, task in [
        ("Short caption", "caption"),
        ("Detailed description", "more_detailed_caption"),
        ("Extract text", "ocr"),
        ("Tags / keywords", "caption"),
        ("Alt text for accessibility", "detailed_caption"),
    ]:
        assert re.search(rf'data-florence-task="{task}"[^>]*> {re.escape(label)}</label>', html), label
    assert (
        '<textarea id="prompt" name="prompt" rows="3" aria-describedby="prompt-help">Describe this image in detail'
        in html
    )


def test_the_form_is_labelled_and_sends_multipart_with_htmx(user_client, ollama_agent):
    html = user_client.get("/ImageToText").content.decode()
    for field in ("images", "model", "prompt", "tag"):
        assert f'<label for="{field}"' in html
    assert 'hx-encoding="multipart/form-data"' in html
    assert 'ws-connect="/ws/jobs/"' in html
    assert "vendor/htmx-ext-ws/ws.js" in html and "django_htmx/htmx-2.min.js" in html
